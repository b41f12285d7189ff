"""The LM loss against float64 numpy, the LR schedule by hand, and 1-device == 8-device steps."""
import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import lm
from hh import sharding
from hh.lm import step as lm_step
from hh.lm import train as lm_train
from hh.train import state as state_lib


def test_next_token_loss_and_gradient_match_float64():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(2, 5, 7)) * 3
  targets = rng.integers(0, 7, (2, 5))
  weights = (rng.random((2, 5)) > 0.3).astype(np.float64)

  def ref_loss(lg):
    lse = np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1)) + lg.max(-1)
    nll = lse - np.take_along_axis(lg, targets[..., None], -1)[..., 0]
    return (nll * weights).sum() / weights.sum()

  def loss(lg):
    m = lm_step.next_token_loss(lg, jnp.asarray(targets), jnp.asarray(weights, jnp.float32))
    return m["loss_sum"] / m["loss_count"]

  assert float(loss(jnp.asarray(logits, jnp.float32))) == pytest.approx(ref_loss(logits),
                                                                        rel=1e-6)
  # d loss / d logits = w·(softmax − onehot)/Σw, by hand
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  ref_grad = (p - np.eye(7)[targets]) * weights[..., None] / weights.sum()
  grad = jax.grad(loss)(jnp.asarray(logits, jnp.float32))
  np.testing.assert_allclose(grad, ref_grad, rtol=1e-5, atol=1e-7)


def test_lr_schedule_by_hand():
  cfg = lm.get_config("size=tiny").lm.optim
  cfg.lr, cfg.warmup_steps, cfg.end_lr_ratio = 1.0, 10, 0.1
  sched = state_lib.lr_schedule(cfg, total_steps=110)
  assert float(sched(0)) == 0.0
  assert float(sched(5)) == pytest.approx(0.5)
  assert float(sched(10)) == pytest.approx(1.0)
  # cosine to 0.1 over 100 steps: halfway = 0.1 + 0.9·(1 + cos(π/2))/2 = 0.55
  assert float(sched(60)) == pytest.approx(0.55, rel=1e-5)
  assert float(sched(110)) == pytest.approx(0.1, rel=1e-5)
  cfg.schedule = "exponential"
  with pytest.raises(ValueError, match="optim.schedule='exponential'; allowed"):
    state_lib.lr_schedule(cfg, 10)


def test_weight_decay_on_every_matrix_of_the_real_models_and_nothing_else():
  """On the real LM and PM trees: a leaf decays iff it is a matrix of the unscanned model (its
  per-layer rank ≥ 2: attention, MLP, embedding, LM head) or the PM's scalar-head kernel."""
  import flax.linen as nn

  from hh.models import DecoderLM, ModelConfig, PreferenceModel
  cfg = ModelConfig(vocab_size=11, n_layer=2, d_model=8, n_head=2, d_ff=16)
  x = jnp.zeros((1, 4), jnp.int32)
  for model, args in [(DecoderLM(cfg), (x, x)), (PreferenceModel(cfg), (x, x, x[:, 0]))]:
    params = nn.unbox(jax.eval_shape(lambda m=model, a=args: m.init(jax.random.key(0), *a)))
    mask = state_lib._decay_mask(params["params"])
    flat = jax.tree_util.tree_flatten_with_path(params["params"])[0]
    for (path, leaf), decays in zip(flat, jax.tree.leaves(mask)):
      name = "/".join(k.key for k in path)
      rank = leaf.ndim - ("/layers/" in f"/{name}/")  # scanned leaves carry a leading L axis
      want = rank >= 2 or name == "head/kernel"
      assert decays == want, name
    assert sum(jax.tree.leaves(mask)) == 8  # embedding, q, k, v, out, wi, wo, head kernel


def _one_step(config, devices, batch_np):
  mesh = sharding.make_mesh(config.mesh, devices)
  with jax.set_mesh(mesh):
    built = lm_train.build(config, mesh, vocab_size=128)
    state = state_lib.create_state(built.init, built.shardings)
    state, metrics = built.train_step(state, sharding.global_batch(batch_np, mesh))
    return jax.device_get(state.params), jax.device_get(metrics), built.shardings


def test_sharded_step_equals_single_device_step():
  """One AdamW step on 1 device vs 8 devices (fsdp=4 × tensor=2): same loss and params.

  Tolerance: fp32 with reductions split differently across devices: loss rel 1e-6, gradient
  norm rel 1e-5, params rtol 1e-5 / atol 1e-6. Adam's ε is raised to 1e-4 here: the first Adam
  step is lr·g/(|g|+ε), which with the default ε = 1e-8 turns the rounding-level sign of a
  gradient that is zero up to rounding into a whole ±lr step.
  """
  config = lm.get_config("size=small")
  config.lm.data.seq_len, config.lm.data.batch_size = 16, 8
  config.lm.optim.warmup_steps = 0  # the first step then uses the peak LR (warmup starts at 0)
  config.lm.optim.eps = 1e-4
  rng = np.random.default_rng(0)
  windows = rng.integers(0, 128, (8, 17)).astype(np.int32)
  batch = {"inputs": windows[:, :-1], "targets": windows[:, 1:],
           "weights": np.ones((8, 16), np.float32)}
  p1, m1, _ = _one_step(config, jax.devices()[:1], batch)
  config.mesh.fsdp, config.mesh.tensor = 4, 2
  p8, m8, shardings = _one_step(config, jax.devices(), batch)
  # the 8-device run really is sharded: a big kernel lives in 8 pieces
  wi = shardings.params["trunk"]["layers"]["mlp"]["wi"]
  assert wi.spec == jax.sharding.PartitionSpec(None, "fsdp", "tensor")
  assert m1["loss_sum"] / m1["loss_count"] == pytest.approx(m8["loss_sum"] / m8["loss_count"],
                                                             rel=1e-6)
  assert m1["grad_norm_sum"] == pytest.approx(m8["grad_norm_sum"], rel=1e-5)
  for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # and the step moved the parameters
  assert any(np.abs(a - b).max() > 1e-4 for a, b in
             zip(jax.tree.leaves(p1), jax.tree.leaves(_init_params(config))))


def _init_params(config):
  mesh = sharding.make_mesh(config.mesh)
  with jax.set_mesh(mesh):
    built = lm_train.build(config, mesh, vocab_size=128)
    return jax.device_get(state_lib.create_state(built.init, built.shardings).params)


def test_replication_guard_names_missing_rule():
  config = lm.get_config("size=small")
  config.mesh.fsdp, config.mesh.tensor = 4, 2
  config.axis_rules = tuple((n, None if n in ("embed", "mlp", "vocab") else ax)
                            for n, ax in config.axis_rules)
  mesh = sharding.make_mesh(config.mesh)
  with pytest.raises(ValueError, match=r"of parameters are replicated.*max_replicated_fraction"):
    lm_train.build(config, mesh, vocab_size=128)


@pytest.mark.parametrize("mesh,msg", [
    (dict(data=1, fsdp=3, tensor=1), "does not divide the 8 devices"),
    (dict(data=-1, fsdp=-1, tensor=1), "at most one may be -1"),
    (dict(data=2, fsdp=2, tensor=1), "covers 4 devices, but 8 are present"),
])
def test_bad_mesh_is_named(mesh, msg):
  config = lm.get_config("size=tiny")
  config.mesh.update(mesh)
  with pytest.raises(ValueError, match=msg):
    sharding.make_mesh(config.mesh)


def test_log_probs_match_float64_under_left_padding():
  """lm_step.log_probs against a float64 forward of each row alone: per-token log-likelihoods
  of the real tokens after the first, zero on padding and at each row's first token."""
  from test_model import CFG, init_params, left_padded_batch, reference_logits

  from hh.models import DecoderLM
  params = init_params(seed=11, scale=1.0)
  tokens, mask = left_padded_batch([9, 4, 7], 9, seed=3)
  got = np.asarray(lm_step.log_probs(DecoderLM(CFG), params, tokens, mask))
  assert got.shape == tokens.shape  # aligned with the tokens: [B, T]
  for row, (m, ref) in enumerate(zip(np.asarray(mask), reference_logits(params, tokens, mask))):
    ids = np.asarray(tokens)[row][m.astype(bool)]
    lse = np.log(np.exp(ref - ref.max(-1, keepdims=True)).sum(-1)) + ref.max(-1)
    want = np.zeros(len(m))
    start = len(m) - len(ids)
    want[start + 1:] = ref[np.arange(len(ids) - 1), ids[1:]] - lse[:-1]
    np.testing.assert_allclose(got[row], want, rtol=1e-4, atol=1e-4)
    assert got[row][:start + 1].sum() == 0.0


def test_lm_loss_is_the_weighted_mean_token_loss():
  """lm_step.lm_loss (what the shared update differentiates) against float64 from the same
  logits: Σ w·nll / Σ w with per-token weights, and eval_metrics' accuracy as Σ w·[argmax = t]."""
  from test_model import CFG, init_params

  from hh.models import DecoderLM
  params = init_params(seed=2, scale=1.0)
  rng = np.random.default_rng(4)
  inputs = rng.integers(0, CFG.vocab_size, (3, 6)).astype(np.int32)
  targets = rng.integers(0, CFG.vocab_size, (3, 6)).astype(np.int32)
  weights = rng.choice([0.0, 0.5, 1.0], (3, 6)).astype(np.float32)
  model = DecoderLM(CFG)
  logits = np.asarray(model.apply({"params": params}, inputs, np.ones_like(inputs)), np.float64)
  targets[:, ::2] = logits.argmax(-1)[:, ::2]  # half the targets predicted right
  batch = {"inputs": inputs, "targets": targets, "weights": weights}
  loss, m = lm_step.lm_loss(model)(params, batch, None)
  lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
  nll = lse - np.take_along_axis(logits, targets[..., None], -1)[..., 0]
  assert float(loss) == pytest.approx((weights * nll).sum() / weights.sum(), rel=1e-5)
  correct = (logits.argmax(-1) == targets)
  assert float(m["accuracy_sum"]) == pytest.approx((weights * correct).sum(), rel=1e-6)
  assert float(m["loss_count"]) == pytest.approx(weights.sum())
  assert float(m["accuracy_count"]) == pytest.approx(weights.sum())  # what reduce() divides by
  e = lm_step.eval_metrics(model, params, batch)  # the validation's metrics: the whole logits
  assert sorted(e) == sorted(m)
  assert float(e["loss_sum"]) == pytest.approx((weights * nll).sum(), rel=1e-5)
  assert float(e["accuracy_sum"]) == pytest.approx((weights * correct).sum(), rel=1e-6)
  assert float(e["loss_count"]) == float(e["accuracy_count"]) == pytest.approx(weights.sum())
  assert 0 < (weights * correct).sum() < weights.sum()  # some right, some wrong: a flip shows


@pytest.mark.parametrize("dtype,chunk", [("float32", 8), ("float32", 2), ("float32", 1),
                                         ("bfloat16", 4)])
def test_fused_head_loss_and_its_gradients_match_float64(dtype, chunk):
  """``fused_head_loss`` (the CPU LM loss: logits a chunk at a time, gradients formed in the
  forward) against float64 numpy: the weighted NLL and accuracy sums, and d/dx, d/dw under a
  loss cotangent of 2.5 (the accuracy's cotangent is ignored: it is a count). A dropped weight,
  a flipped one-hot, an unscaled or the accuracy's cotangent, or chunks summed off by one are far
  outside the tolerances (fp32: 1e-5; bf16: its rounding of x, w and dlogits, 2⁻⁶ of the max)."""
  rng = np.random.default_rng(5)
  b, t, d, v = 3, 8, 16, 40
  dt = jnp.dtype(dtype)
  x = jnp.asarray(rng.normal(size=(b, t, d)), dt)
  w = jnp.asarray(rng.normal(size=(d, v)) * 0.5, dt)
  targets = rng.integers(0, v, (b, t)).astype(np.int32)
  weights = rng.choice([0.0, 0.5, 1.0, 2.0], (b, t)).astype(np.float32)
  (loss, acc), vjp = jax.vjp(
      lambda x, w: lm_step.fused_head_loss(x, w, jnp.asarray(targets), jnp.asarray(weights),
                                           chunk), x, w)
  dx, dw = vjp((jnp.float32(2.5), jnp.float32(7.0)))
  x64, w64 = np.asarray(x, np.float64), np.asarray(w, np.float64)
  logits = x64 @ w64
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  nll = -np.log(np.take_along_axis(p, targets[..., None], -1)[..., 0])
  dlogits = 2.5 * weights[..., None] * (p - np.eye(v)[targets])
  want = {"loss": (weights * nll).sum(), "acc": (weights * (logits.argmax(-1) == targets)).sum(),
          "dx": dlogits @ w64.T, "dw": np.einsum("bti,btv->iv", x64, dlogits)}
  tol = 1e-5 if dtype == "float32" else 2**-6
  assert float(loss) == pytest.approx(want["loss"], rel=tol)
  assert float(acc) == pytest.approx(want["acc"])
  assert dx.dtype == dt and dw.dtype == dt
  for got, ref in ((dx, want["dx"]), (dw, want["dw"])):
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, rtol=tol,
                               atol=tol * np.abs(ref).max())


def test_lm_loss_gives_the_plain_heads_loss_and_gradients_on_every_backends_path():
  """``lm_loss`` runs the fused head loss on CPU and on the accelerators' path (its chunks of
  another size); its loss, metrics and every parameter's gradient equal the plain head's (the
  logits whole, ``eval_metrics``)."""
  from test_model import CFG, init_params

  from hh.models import DecoderLM, transformer
  params = init_params(seed=3, scale=1.0)
  rng = np.random.default_rng(6)
  inputs = rng.integers(0, CFG.vocab_size, (4, 8)).astype(np.int32)
  batch = {"inputs": inputs, "targets": rng.integers(0, CFG.vocab_size, (4, 8)).astype(np.int32),
           "weights": rng.choice([0.0, 1.0], (4, 8)).astype(np.float32)}
  model = DecoderLM(CFG)

  def plain(p):
    m = lm_step.eval_metrics(model, p, batch)
    return m["loss_sum"] / m["loss_count"], m

  def grads(fn):  # a fresh function per trace: jit caches by function, not by the switch
    return jax.jit(jax.grad(fn, has_aux=True))(params)

  plain_g, plain_m = grads(plain)
  for path in ("cpu", "accelerator"):
    with transformer.accelerator_paths() if path == "accelerator" else contextlib.nullcontext():
      fused_g, fused_m = grads(lambda p: lm_step.lm_loss(model)(p, batch, None))
    for k in plain_m:
      assert float(fused_m[k]) == pytest.approx(float(plain_m[k]), rel=1e-5), (path, k)
    for a, b in zip(jax.tree.leaves(fused_g), jax.tree.leaves(plain_g)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
