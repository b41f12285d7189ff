"""Context distillation's loss (SPEC §4.6): KL(teacher ‖ student) over the teacher's top-k tokens
plus one bucket for the rest.

The teacher is the LM with the HHH prompt in its context, the student the same LM without it;
at each position of the student's text both predict the next token. Only the teacher's k most
likely tokens are kept as themselves (k = 50 in the paper); all other tokens are merged into one
bucket, so the KL is over k + 1 outcomes:

  KL = Σ_{i ∈ top-k(p)} p_i · (log p_i − log q_i)  +  p_rest · (log p_rest − log q_rest),
  p_rest = 1 − Σ_{top-k} p,  q_rest = 1 − Σ_{top-k} q  (the student's mass on the same tokens).

The bucket masses are computed as log-sum-exps over the tokens outside the top-k, never as
1 − Σ, so they stay exact when the top-k holds almost all the mass.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def topk_bucket_kl(teacher_logits: jax.Array, student_logits: jax.Array, k: int = 50) -> jax.Array:
  """KL(teacher ‖ student) [B, T] over the teacher's top-k tokens + one bucket (float32).

  ``teacher_logits``, ``student_logits``: [B, T, V] for the same next tokens.
  """
  lp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)        # [B, T, V]
  lq = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)
  top_lp, idx = jax.lax.top_k(lp, k)                                           # [B, T, k]
  top_lq = jnp.take_along_axis(lq, idx, axis=-1)
  in_top = jnp.zeros(lp.shape, bool).at[
      jnp.arange(lp.shape[0])[:, None, None], jnp.arange(lp.shape[1])[None, :, None], idx].set(True)
  rest_lp = jax.nn.logsumexp(jnp.where(in_top, -jnp.inf, lp), axis=-1)         # [B, T]
  rest_lq = jax.nn.logsumexp(jnp.where(in_top, -jnp.inf, lq), axis=-1)
  kl_top = (jnp.exp(top_lp) * (top_lp - top_lq)).sum(-1)
  kl_rest = jnp.where(jnp.isfinite(rest_lp), jnp.exp(rest_lp) * (rest_lp - rest_lq), 0.0)
  return kl_top + kl_rest


def distill_loss(teacher_logits: jax.Array, student_logits: jax.Array, weights: jax.Array,
                 k: int = 50) -> dict:
  """The token-weighted CD loss as sums + counts: weights [B, T] (1 on the student's real
  tokens whose next token is predicted, 0 on padding)."""
  kl = topk_bucket_kl(jax.lax.stop_gradient(teacher_logits), student_logits, k)
  return {"loss_sum": (kl * weights).sum(), "loss_count": weights.sum()}
