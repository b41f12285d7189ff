"""Next-token loss, LM log-likelihoods, and the LM loss function the shared update runs
(pure functions)."""
from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from hh.models import head, transformer


def next_token_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array) -> dict:
  """Masked cross-entropy as (sum, count): logits [B, T, V] f32, targets [B, T], weights [B, T].

  loss_sum = Σ_bt w_bt · (logsumexp(logits_bt) − logits_bt[target_bt]); count = Σ w.
  """
  logz = jax.nn.logsumexp(logits, axis=-1)                                   # [B, T]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1).squeeze(-1)
  nll = logz - target_logit
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return {"loss_sum": (nll * weights).sum(), "loss_count": weights.sum(),
          "accuracy_sum": (correct * weights).sum(), "accuracy_count": weights.sum()}


def log_probs(model: nn.Module, params, tokens: jax.Array, mask: jax.Array) -> jax.Array:
  """log p(tokens[b, t] | tokens[b, <t]) [B, T] float32 under a ``DecoderLM``; 0 where the token
  or its predecessor is padding (and at t = 0), so ``.sum(-1)`` is each row's log-likelihood of
  its real tokens after the first. Left or right padding alike (positions come from the mask).
  The head runs in chunks (``head.per_position``).
  """
  x, w = model.apply({"params": params}, tokens, mask, method="head_inputs")   # [B, T, D]
  following = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))                      # token t + 1
  lp = head.per_position(target_log_probs, x, w, following)                  # [B, T]
  real = (mask[:, 1:] * mask[:, :-1]).astype(jnp.float32)
  return jnp.pad(lp[:, :-1] * real, ((0, 0), (1, 0)))


def target_log_probs(logits: jax.Array, targets: jax.Array) -> jax.Array:
  """log softmax(logits)[target]: logits [B, T, V] float32, targets [B, T] → [B, T]."""
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


def lm_loss(model: nn.Module):
  """``loss_fn(params, batch, rng) -> (mean token loss, metrics)`` for ``build.make_update``.

  ``batch``: inputs, targets, weights [B, T] (packed windows: every position is real). The head
  and its loss are ``fused_head_loss`` on every backend (the same sums, the logits never whole:
  chunks of ~1,024 rows on CPU, the fastest there, ~4,096 on accelerators, where each chunk's
  weight gradient is reduced over the batch shards under FSDP).
  """
  def loss_fn(params, batch, rng):
    del rng  # no dropout (the paper uses none)
    inputs, targets, weights = batch["inputs"], batch["targets"], batch["weights"]
    chunk = head.token_chunk(*inputs.shape, rows=head.chunk_rows())
    if chunk:
      x, w = model.apply({"params": params}, inputs, jnp.ones_like(inputs),
                         method="head_inputs")
      loss_sum, acc_sum = fused_head_loss(x, w, targets, weights.astype(jnp.float32), chunk)
      count = weights.sum()
      m = {"loss_sum": loss_sum, "loss_count": count, "accuracy_sum": acc_sum,
           "accuracy_count": count}
    else:
      m = eval_metrics(model, params, batch)
    return m["loss_sum"] / jnp.maximum(m["loss_count"], 1e-6), m
  return loss_fn


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def fused_head_loss(x: jax.Array, w: jax.Array, targets: jax.Array, weights: jax.Array,
                    chunk: int) -> tuple[jax.Array, jax.Array]:
  """(Σ_bt w_bt · nll_bt, Σ_bt w_bt · [argmax = target]) of logits x @ w, computed ``chunk``
  positions at a time: x [B, T, D], w [D, V] (compute dtype), targets [B, T], weights [B, T].

  ``next_token_loss`` on the whole logits, without them: a chunk's logits [B, chunk, V]
  (float32) give its loss and, at once, its share of the gradients — dlogits = w_bt (softmax −
  onehot(target)), dx = dlogits wᵀ, dw += xᵀ dlogits — kept for the backward, which scales them
  by the loss's cotangent (the accuracy has none). So nothing of size B·T·V is ever stored and no
  logits are recomputed: on CPU the 13M head's loss and gradients take ~3.9 s instead of ~4.4 in
  float32 and ~2.6 instead of ~3.7 in bf16 (16 × 512 tokens, V 32,000). Under FSDP each chunk's
  dw is reduced across the batch shards."""
  return _fused_head_loss_fwd(x, w, targets, weights, chunk)[0]


def _fused_head_loss_fwd(x, w, targets, weights, chunk):
  f32 = jnp.float32
  b, t, d = x.shape
  split = lambda a: a.reshape(b, t // chunk, chunk, *a.shape[2:]).swapaxes(0, 1)  # noqa: E731

  def body(dw, xs):
    xc, tc, wc = xs                                                  # [B, c, D], [B, c] ×2
    x2 = xc.reshape(b * chunk, d)
    logits = jnp.einsum("ti,io->to", x2, w, preferred_element_type=f32)  # [B·c, V]
    tgt = tc.reshape(-1)
    m = logits.max(-1)
    e = jnp.exp(logits - m[:, None])
    s = e.sum(-1)
    picked = jnp.take_along_axis(logits, tgt[:, None], axis=-1)[:, 0]
    nll = m + jnp.log(s) - picked
    wt = wc.reshape(-1)
    hit = (jnp.argmax(logits, -1) == tgt).astype(f32)
    onehot = jnp.arange(logits.shape[-1])[None, :] == tgt[:, None]
    dlogits = (e * (wt / s)[:, None] - jnp.where(onehot, wt[:, None], 0.0)).astype(x.dtype)
    # float32 accumulation; dw's rows split (B, chunk) so XLA's library kernels take it (bf16:
    # ~4×; float32: 154 against 184 ms a chunk of the 13M head, where Eigen was faster for the
    # trunk's shapes)
    dx = transformer.einsum_f32acc("to,io->ti", dlogits, w)
    dw_c = transformer.einsum_f32acc("ti,to->io", x2, dlogits, split=b)
    sums = jnp.stack([(nll * wt).sum(), (hit * wt).sum()])
    return dw + dw_c.astype(f32), (sums, dx.reshape(b, chunk, d).astype(x.dtype))

  dw, (sums, dx) = jax.lax.scan(body, jnp.zeros(w.shape, f32),
                                (split(x), split(targets), split(weights)))
  sums = sums.sum(0)
  dx = dx.swapaxes(0, 1).reshape(b, t, d)
  return (sums[0], sums[1]), (dx, dw.astype(w.dtype))


def _fused_head_loss_bwd(chunk, res, g):
  dx, dw = res
  g_loss = g[0]                                     # the accuracy is a count: no gradient
  return (dx * g_loss.astype(dx.dtype), dw * g_loss.astype(dw.dtype), None, None)


fused_head_loss.defvjp(_fused_head_loss_fwd, _fused_head_loss_bwd)


def eval_metrics(model: nn.Module, params, batch: dict) -> dict:
  """Loss and accuracy of a batch as sums plus counts."""
  logits = model.apply({"params": params}, batch["inputs"], jnp.ones_like(batch["inputs"]))
  return next_token_loss(logits, batch["targets"], batch["weights"])
