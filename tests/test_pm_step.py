"""Preference loss against float64, the score at the EOC token, and the sharded PM step."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import pm
from hh import sharding
from hh.models import ModelConfig, PreferenceModel
from hh.pm import step as pm_step
from hh.pm import train as pm_train
from hh.train import state as state_lib


def test_preference_loss_and_gradient_match_float64():
  rng = np.random.default_rng(0)
  good, bad = rng.normal(size=6) * 3, rng.normal(size=6) * 3
  w = np.array([1, 1, 2, 0, 1, 3], np.float64)  # λ-weighted pairs and one padding pair
  ref = (w * np.log1p(np.exp(bad - good))).sum() / w.sum()

  def loss(g, b):
    m = pm_step.preference_loss(g, b, jnp.asarray(w, jnp.float32))
    return m["loss_sum"] / m["loss_count"]

  f32 = lambda x: jnp.asarray(x, jnp.float32)  # noqa: E731
  assert float(loss(f32(good), f32(bad))) == pytest.approx(ref, rel=1e-6)
  # dL/dr_good = −w·σ(r_bad − r_good)/Σw, dL/dr_bad = −dL/dr_good
  sig = 1 / (1 + np.exp(-(bad - good)))
  g_good, g_bad = jax.grad(loss, argnums=(0, 1))(f32(good), f32(bad))
  np.testing.assert_allclose(g_good, -w * sig / w.sum(), rtol=1e-5, atol=1e-8)
  np.testing.assert_allclose(g_bad, w * sig / w.sum(), rtol=1e-5, atol=1e-8)
  m = pm_step.preference_loss(f32(good), f32(bad), jnp.asarray(w, jnp.float32))
  assert float(m["accuracy_sum"]) == ((good > bad) & (w > 0)).sum()
  assert float(m["accuracy_count"]) == 5


def _model_and_params():
  cfg = ModelConfig(vocab_size=40, n_layer=2, d_model=32, n_head=4, d_ff=64)
  model = PreferenceModel(cfg)
  tokens = jnp.zeros((1, 8), jnp.int32)
  params = jax.tree.map(lambda x: getattr(x, "value", x), model.init(
      jax.random.key(0), tokens, tokens, jnp.zeros((1,), jnp.int32))["params"],
      is_leaf=lambda x: hasattr(x, "names"))
  params["head"]["kernel"] = jax.random.normal(jax.random.key(1), (32,))  # non-zero head
  return model, params


def test_score_is_read_at_the_eoc_token_whatever_the_padding():
  model, params = _model_and_params()
  seq = np.array([7, 3, 9, 12, 5, 4], np.int32)  # ends with the EOC id (4)
  right = np.zeros((1, 10), np.int32)
  right[0, :6] = seq
  left = np.zeros((1, 10), np.int32)
  left[0, 4:] = seq
  alone = model.apply({"params": params}, seq[None], np.ones((1, 6), np.int32), np.array([5]))
  r = model.apply({"params": params}, right, (right > 0).astype(np.int32), np.array([5]))
  lft = model.apply({"params": params}, left, (left > 0).astype(np.int32), np.array([9]))
  np.testing.assert_allclose(r, alone, rtol=1e-5)
  np.testing.assert_allclose(lft, alone, rtol=1e-5)
  # a different index reads a different position
  other = model.apply({"params": params}, right, (right > 0).astype(np.int32), np.array([4]))
  assert abs(float(other[0] - alone[0])) > 1e-4


def _one_pm_step(config, devices, batch):
  mesh = sharding.make_mesh(config.mesh, devices)
  with jax.set_mesh(mesh):
    built = pm_train.build(config, config.pm.finetune, mesh, 64, steps=10)
    state = state_lib.create_state(built.init, built.shardings)
    p0 = jax.device_get(state.params)
    step = built.train_step
    batch = sharding.global_batch(batch, mesh)
    state, _ = step(state, batch)  # the zero-initialised head gets weights …
    state, metrics = step(state, batch)  # … so the second step moves the trunk too
    return p0, jax.device_get(state.params), jax.device_get(metrics)


def test_sharded_pm_step_equals_single_device():
  """8 pairs = 16 sequences; 1 device vs fsdp 4 × tensor 2 (tolerances as the LM step's)."""
  config = pm.get_config("size=small")
  optim = config.pm.finetune.optim
  optim.lr, optim.warmup_steps, optim.eps = 3e-3, 0, 1e-4  # the LM's peak LR: a visible step
  rng = np.random.default_rng(1)
  lengths = rng.integers(6, 16, 16)
  mask = (np.arange(16)[None] < lengths[:, None]).astype(np.int32)
  batch = {"tokens": rng.integers(5, 64, (16, 16)).astype(np.int32) * mask, "mask": mask,
           "eoc": (lengths - 1).astype(np.int32), "weight": np.ones(8, np.float32)}
  p0, p1, m1 = _one_pm_step(config, jax.devices()[:1], batch)
  config.mesh.fsdp, config.mesh.tensor = 4, 2
  _, p8, m8 = _one_pm_step(config, jax.devices(), batch)
  assert m1["loss_sum"] == pytest.approx(m8["loss_sum"], rel=1e-6)
  assert m1["grad_norm_sum"] == pytest.approx(m8["grad_norm_sum"], rel=1e-5)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  assert np.abs(p1["trunk"]["layers"]["mlp"]["wi"] - p0["trunk"]["layers"]["mlp"]["wi"]).max() \
      > 1e-4  # the trunk really moved, so the comparison covers it


def test_eoc_embedding_starts_as_the_human_marker():
  from hh.pm.train import eoc_from_marker
  emb = np.arange(12.0).reshape(4, 3)
  params = {"trunk": {"embed": {"embedding": jnp.asarray(emb)}, "layers": 7}, "head": 9}
  out = eoc_from_marker(params, 1, 3)
  expected = emb.copy()
  expected[1] = emb[3]
  np.testing.assert_array_equal(out["trunk"]["embed"]["embedding"], expected)
  assert out["trunk"]["layers"] == 7 and out["head"] == 9


def test_pm_loss_returns_the_weighted_mean_of_the_scored_pairs():
  """pm_step.pm_loss (what the update differentiates) = Σ w·log(1 + e^(r_bad − r_good)) / Σ w,
  from the model's own scores of the chosen rows [0, B) and rejected rows [B, 2B); a tie counts
  as wrong in the accuracy."""
  model, params = _model_and_params()
  rng = np.random.default_rng(3)
  tokens = rng.integers(5, 40, (6, 8)).astype(np.int32)
  tokens[2] = tokens[5]  # pair 2: chosen == rejected, a tie
  batch = {"tokens": tokens, "mask": np.ones_like(tokens), "eoc": np.full(6, 7, np.int32),
           "weight": np.array([1.0, 0.5, 2.0], np.float32)}
  loss, m = pm_step.pm_loss(model)(params, batch, None)
  s = np.asarray(pm_step.score_fn(model)(params, tokens, batch["mask"], batch["eoc"]),
                 np.float64)
  good, bad, w = s[:3], s[3:], batch["weight"].astype(np.float64)
  assert float(loss) == pytest.approx((w * np.log1p(np.exp(bad - good))).sum() / w.sum(),
                                      rel=1e-5)
  assert good[2] == bad[2]
  assert float(m["accuracy_sum"]) == ((good > bad)[:2]).sum()  # the tie is not counted right
