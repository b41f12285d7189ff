"""The LM head in chunks (hh/models/head.py): per-position outputs and their gradients equal the
whole logits', and no [B, T, V] array is kept for the backward; PPO's, CD's and the scorers'
uses of it against their whole-logits forms."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hh.models import head, transformer


def _stats(logits, targets):
  """Per-position outputs with different cotangents: log p(target), the entropy and the two
  largest log-probs (an output with a trailing axis, as CD's teacher top-k)."""
  lp = jax.nn.log_softmax(logits, axis=-1)
  return (jnp.take_along_axis(lp, targets[..., None], axis=-1)[..., 0],
          -(jnp.exp(lp) * lp).sum(-1), jax.lax.top_k(lp, 2)[0])


def test_token_chunk_halves_to_a_divisor_of_t_that_fits_the_rows():
  """By hand: halving T until B × chunk ≤ rows (a divisor of T), T itself when it fits, 0 when
  no halving fits (T odd)."""
  cases = {(4, 2048, 4096): 1024, (16, 96, 1024): 48, (3, 8, 4): 1, (2, 8, 16): 8,
           (4, 7, 8): 0, (4, 12, 8): 0, (4, 12, 24): 6}
  assert {k: head.token_chunk(*k) for k in cases} == cases


@pytest.mark.parametrize("rows", [16, 8, 4, 2])  # 1, 2, 4 and 8 chunks of 2 × 8 positions
def test_per_position_values_and_gradients_equal_the_whole_logits(rows):
  """Against float64 numpy (values) and autodiff through the whole logits (d/dx, d/dw under
  cotangents that differ by position and output): a chunk's rows mixed up, a chunk dropped or
  counted twice, or one output's cotangent given to the other are far outside 1e-5."""
  rng = np.random.default_rng(0)
  b, t, d, v = 2, 8, 6, 11
  x = jnp.asarray(rng.normal(size=(b, t, d)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(d, v)), jnp.float32)
  targets = jnp.asarray(rng.integers(0, v, (b, t)), jnp.int32)
  ct = (jnp.asarray(rng.normal(size=(b, t)), jnp.float32),
        jnp.asarray(rng.normal(size=(b, t)), jnp.float32),
        jnp.asarray(rng.normal(size=(b, t, 2)), jnp.float32))

  def loss(fn):
    return lambda x, w: sum((o * c).sum() for o, c in zip(fn(x, w), ct))

  chunked = lambda x, w: head.per_position(_stats, x, w, targets, rows=rows)  # noqa: E731
  whole = lambda x, w: _stats(transformer.head_logits(x, w), targets)         # noqa: E731
  logits = np.asarray(x, np.float64) @ np.asarray(w, np.float64)
  p = np.exp(logits - logits.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  want = (np.log(np.take_along_axis(p, np.asarray(targets)[..., None], -1)[..., 0]),
          -(p * np.log(p)).sum(-1), np.log(np.sort(p, -1)[..., ::-1][..., :2]))
  for got, ref in zip(chunked(x, w), want):
    np.testing.assert_allclose(np.asarray(got), ref, rtol=1e-5, atol=1e-5)
  for got, ref in zip(jax.grad(loss(chunked), (0, 1))(x, w), jax.grad(loss(whole), (0, 1))(x, w)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-5, atol=1e-5)


def test_the_backward_keeps_no_chunk_of_logits(capsys):
  """The residuals a gradient through ``per_position`` saves: w and x's chunks, never an array
  with the vocabulary as its last axis other than w itself (the whole form keeps [B, T, V])."""
  b, t, d, v = 2, 8, 6, 11
  x, w = jnp.ones((b, t, d)), jnp.ones((d, v))
  targets = jnp.zeros((b, t), jnp.int32)
  for rows, keeps_logits in ((4, False), (16, True)):
    fn = lambda x, w, rows=rows: head.per_position(_stats, x, w, targets, rows=rows)[0].sum()  # noqa: E731
    jax.ad_checkpoint.print_saved_residuals(fn, x, w)
    saved = [line.split(" ")[0] for line in capsys.readouterr().out.splitlines()]
    logits = [s for s in saved if s.endswith(f",{v}]") and s != f"f32[{d},{v}]"]
    assert bool(logits) == keeps_logits, saved


def _force_chunks(monkeypatch, rows):
  monkeypatch.setattr(head, "chunk_rows", lambda: rows)


def test_scorers_ppo_and_cd_give_the_same_in_chunks(monkeypatch):
  """``lm.step.log_probs`` (the scorers), ``ppo.response_outputs`` (the PPO update's log-probs
  at a temperature, entropies and values) and CD's loss with its gradients: chunks of 4 rows
  against one chunk (the whole logits)."""
  from test_model import CFG, init_params, left_padded_batch

  from hh.cd import step as distill
  from hh.lm import step as lm_step
  from hh.models import DecoderLM
  from hh.ppo import step as ppo
  model = DecoderLM(CFG)
  params = init_params(seed=3, scale=1.0)
  tokens, mask = left_padded_batch([8, 5, 3], 8, seed=2)
  rng = np.random.default_rng(1)
  teacher = jnp.asarray(rng.normal(size=(3, 8, CFG.vocab_size)) * 3, jnp.float32)
  t_lp, t_idx, t_rest = distill.teacher_topk(teacher, 5)
  batch = {"inputs": tokens, "weights": mask.astype(jnp.float32), "t_lp": t_lp, "t_idx": t_idx,
           "t_rest": t_rest}
  value = {"head": {"kernel": jnp.asarray(rng.normal(size=CFG.d_model), jnp.float32),
                    "bias": jnp.float32(0.3)}}

  def run():
    return {"log_probs": lm_step.log_probs(model, params, tokens, mask),
            "ppo": ppo.response_outputs(model, None, (params, value), tokens, mask, 4, 0.7),
            "cd": jax.grad(distill.cd_loss(model), has_aux=True)(params, batch, None)}

  _force_chunks(monkeypatch, 10_000)
  whole = run()
  _force_chunks(monkeypatch, 4)   # 3 rows: chunks of 1 position (T = 8 and N = 4)
  chunked = run()
  for a, b in zip(jax.tree.leaves(chunked), jax.tree.leaves(whole)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)
