"""The shared stage layer: the update, the PM learning the right direction, λ, the PM's start
(eoc_init, reset_head), per-stage configs, and the identity check of a workdir."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import common, lm, pipeline, pm
from hh import sharding
from hh.pm import step as pm_step
from hh.pm import train as pm_train
from hh.train import build as build_lib
from hh.train import state as state_lib


def _tiny_pm_config():
  config = pm.get_config("size=nano")
  config.pm.finetune.optim.update(dict(lr=3e-2, warmup_steps=0, weight_decay=0.0))
  return config


def _separable_batch(rng, pairs=8, seq=12, vocab=64):
  """Chosen rows end in token 7 before EOC, rejected rows in token 9; the rest random."""
  tokens = rng.integers(20, vocab, (2 * pairs, seq)).astype(np.int32)
  tokens[:pairs, -2], tokens[pairs:, -2] = 7, 9
  tokens[:, -1] = 4  # EOC
  return {"tokens": tokens, "mask": np.ones_like(tokens), "eoc": np.full(2 * pairs, seq - 1,
                                                                          np.int32),
          "weight": np.ones(pairs, np.float32)}


def test_pm_step_learns_to_prefer_the_chosen_response():
  """On a separable batch the loss falls and, scored independently afterwards, every chosen
  row scores above its rejected row (a PM that learned backwards would fail here)."""
  config = _tiny_pm_config()
  mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
  batch_np = _separable_batch(np.random.default_rng(0))
  with jax.set_mesh(mesh):
    built = pm_train.build(config, config.pm.finetune, mesh, 64, steps=40)
    state = state_lib.create_state(built.init, built.shardings)
    batch = sharding.global_batch(batch_np, mesh)
    losses = []
    for _ in range(40):
      state, m = built.train_step(state, batch)
      losses.append(float(m["loss_sum"] / m["loss_count"]))
    scores = np.asarray(pm_step.score_fn(built.model)(
        state.params, batch["tokens"], batch["mask"], batch["eoc"]))
  assert losses[0] == pytest.approx(np.log(2), rel=1e-4)  # zero head: every score is 0
  assert losses[-1] < 0.1
  chosen, rejected = scores[:8], scores[8:]
  assert (chosen > rejected).all(), (chosen, rejected)
  # fresh test pairs of the same rule are ranked the same way
  fresh = _separable_batch(np.random.default_rng(1))
  s = np.asarray(pm_step.score_fn(built.model)(state.params, fresh["tokens"], fresh["mask"],
                                               fresh["eoc"]))
  assert (s[:8] > s[8:]).mean() >= 0.75  # a PM that learned backwards would score ≈ 0


def test_harmless_weight_lambda_enters_the_loss_as_the_formula_says(wikitext_tokenizer):
  """L = (Σ_helpful ℓ + λ Σ_harmless ℓ) / (n_helpful + λ n_harmless), ℓ = log(1 + e^(r_bad −
  r_good)), with λ carried from the config's dataset weights to each pair (Bai et al. 2022, §3.1, App. A.2)."""
  for lam in (1.0, 0.25, 3.0):
    ft = pm.get_config(f"size=tiny,harmless_weight={lam}").pm.finetune.datasets
    assert dict(ft) == {"hh_sim/helpful:train": 1.0, "hh_sim/harmless:train": lam}
  from hh.data import pipeline as data_pipeline
  pair = {"context_text": "\n\nHuman: hi", "chosen": " yes", "rejected": " no",
          "num_human_turns": 1}
  src = data_pipeline.Concat([[pair] * 3, [pair] * 2], [1.0, 0.25])
  assert [src[i]["_weight"] for i in range(5)] == [1.0, 1.0, 1.0, 0.25, 0.25]
  tokenize = data_pipeline.PairTokenizer(wikitext_tokenizer, 16)
  assert [float(tokenize.map({**src[i], "_index": i})["weight"]) for i in range(5)] == \
      [1.0, 1.0, 1.0, 0.25, 0.25]  # … and reaches the batch the loss reads
  rng = np.random.default_rng(2)
  good, bad = rng.normal(size=5), rng.normal(size=5)
  harmless = np.array([0, 0, 0, 1, 1], bool)
  ell = np.log1p(np.exp(bad - good))
  for lam in (1.0, 0.25, 3.0):
    w = np.where(harmless, lam, 1.0)
    m = pm_step.preference_loss(jnp.asarray(good, jnp.float32), jnp.asarray(bad, jnp.float32),
                                jnp.asarray(w, jnp.float32))
    want = (ell[~harmless].sum() + lam * ell[harmless].sum()) / (3 + lam * 2)
    assert float(m["loss_sum"] / m["loss_count"]) == pytest.approx(want, rel=1e-6)
  m1 = pm_step.preference_loss(jnp.asarray(good), jnp.asarray(bad), jnp.ones(5))
  m3 = pm_step.preference_loss(jnp.asarray(good), jnp.asarray(bad),
                               jnp.asarray(np.where(harmless, 3.0, 1.0)))
  assert float(m1["loss_sum"] / m1["loss_count"]) != pytest.approx(
      float(m3["loss_sum"] / m3["loss_count"]), rel=1e-3)


def test_update_folds_the_step_into_the_rng_and_applies_the_optimizer():
  """make_update: loss_fn sees fold_in(state.rng, step); the step matches optax by hand."""
  tx = optax.sgd(0.1)

  def loss_fn(params, batch, rng):
    noise = jax.random.normal(rng, params["w"].shape)
    return (params["w"] * noise).sum() + (params["w"] ** 2).sum() * batch["c"], {}

  update = jax.jit(build_lib.make_update(loss_fn, tx))
  params = {"w": jnp.arange(3.0)}
  key = jax.random.PRNGKey(7)
  state = state_lib.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                               opt_state=tx.init(params), rng=key)
  batch = {"c": jnp.float32(0.5)}
  w = np.arange(3.0)
  for step in range(2):
    state, metrics = update(state, batch)
    noise = np.asarray(jax.random.normal(jax.random.fold_in(key, step), (3,)))
    grad = noise + 2 * 0.5 * w
    w = w - 0.1 * grad
    np.testing.assert_allclose(state.params["w"], w, rtol=1e-5)
    assert float(metrics["grad_norm_sum"]) == pytest.approx(np.linalg.norm(grad), rel=1e-5)
  assert int(state.step) == 2


def _pm_params(rng, vocab=6, d=3):
  tree = {"trunk": {"embed": {"embedding": rng.normal(size=(vocab, d))}, "layers": rng.normal(
      size=(2, d))}, "head": {"kernel": rng.normal(size=d), "bias": rng.normal()}}
  return jax.tree.map(jnp.asarray, tree)


def test_start_params_eoc_init_and_reset_head():
  rng = np.random.default_rng(3)
  fresh = jax.tree.map(jnp.zeros_like, _pm_params(rng))
  loaded = _pm_params(rng)
  eoc, marker = 4, 1
  kw = dict(eoc_id=eoc, marker_id=marker)
  # from the LM: its trunk, a fresh (zero) head, the EOC row a copy of the Human marker's
  p = pm_train.start_params(fresh, loaded, "lm", eoc_init="human_marker", reset_head=True, **kw)
  emb, lm_emb = (np.asarray(t["trunk"]["embed"]["embedding"]) for t in (p, loaded))
  np.testing.assert_array_equal(emb[eoc], lm_emb[marker])
  others = [i for i in range(6) if i != eoc]
  np.testing.assert_array_equal(emb[others], lm_emb[others])
  np.testing.assert_array_equal(p["head"]["kernel"], fresh["head"]["kernel"])
  # eoc_init=random keeps the LM's own EOC row
  p = pm_train.start_params(fresh, loaded, "lm", eoc_init="random", reset_head=True, **kw)
  np.testing.assert_array_equal(p["trunk"]["embed"]["embedding"],
                                loaded["trunk"]["embed"]["embedding"])
  with pytest.raises(ValueError, match="config.pm.eoc_init='zeros'; allowed"):
    pm_train.start_params(fresh, loaded, "lm", eoc_init="zeros", reset_head=True, **kw)
  # from PMP: its whole trunk (no EOC copy), and its head unless reset_head
  p = pm_train.start_params(fresh, loaded, "pmp", eoc_init="human_marker", reset_head=True, **kw)
  np.testing.assert_array_equal(p["trunk"]["embed"]["embedding"],
                                loaded["trunk"]["embed"]["embedding"])
  np.testing.assert_array_equal(p["head"]["kernel"], fresh["head"]["kernel"])
  p = pm_train.start_params(fresh, loaded, "pmp", eoc_init="human_marker", reset_head=False,
                            **kw)
  np.testing.assert_array_equal(p["head"]["kernel"], loaded["head"]["kernel"])


def test_stage_configs_are_composed_not_inherited():
  """Each stage owns its optimizer (the paper's multiples of the pretraining LR computed in the
  config files); the PM config carries no LM stage; the pipeline composes both."""
  for size, ft in (("tiny", 0.03), ("13M", 0.01)):
    c = pm.get_config(f"size={size}")
    base_lr = common.pretrain_lr(size)
    assert "lm" not in c and c.pm.pmp.optim.lr == pytest.approx(0.1 * base_lr)
    assert c.pm.finetune.optim.lr == pytest.approx(ft * base_lr)
    assert lm.get_config(f"size={size}").lm.optim.lr == base_lr
  p = pipeline.get_config("size=tiny")
  assert p.lm.data.datasets == (("hh_sim/lm", 1.0),) and p.lm.loop.steps == 2400
  p.pm.finetune.loop.log_every = 3  # a PM setting leaves the LM stage alone
  assert p.lm.loop.log_every == 20
  assert dict(p.axis_rules)["cache_batch"] == ("data", "fsdp")


def test_a_stage_workdir_of_another_config_is_refused(tmp_path):
  from hh import stages
  config = lm.get_config("size=tiny")
  stage = stages.get("lm")
  stages.check_identity(stage.name, config, str(tmp_path))
  config.progress = False  # no effect on results: allowed
  config.lm.loop.stop_at = 3
  stages.check_identity(stage.name, config, str(tmp_path))
  config.lm.optim.lr = 1e-3
  config.model.rope_theta = 500.0
  with pytest.raises(ValueError, match=r"another config \(differs in lm\.optim\.lr, "
                                       r"model\.rope_theta\)"):
    stages.check_identity(stage.name, config, str(tmp_path))
