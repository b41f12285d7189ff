"""Context distillation's loss (Bai et al. 2022, App. A.1): KL(teacher ‖ student) over the teacher's top-k tokens
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

from hh.models import head


def teacher_topk(teacher_logits: jax.Array, k: int = 50):
  """The teacher's side of the loss, what a CD step needs of it: log-probs of its k most likely
  tokens [B, T, k], their ids [B, T, k], and the log-mass of the rest [B, T] (−inf if none)."""
  lp = jax.nn.log_softmax(teacher_logits.astype(jnp.float32), axis=-1)        # [B, T, V]
  top_lp, idx = jax.lax.top_k(lp, k)
  rest_lp = jax.nn.logsumexp(jnp.where(_in_top(lp.shape, idx), -jnp.inf, lp), axis=-1)
  return top_lp, idx, rest_lp


def _in_top(shape, idx: jax.Array) -> jax.Array:
  """Boolean [B, T, V]: True at the ids ``idx`` [B, T, k]."""
  b, t = shape[:2]
  return jnp.zeros(shape, bool).at[jnp.arange(b)[:, None, None], jnp.arange(t)[None, :, None],
                                   idx].set(True)


def bucket_kl(top_lp: jax.Array, idx: jax.Array, rest_lp: jax.Array,
              student_logits: jax.Array) -> jax.Array:
  """KL(teacher ‖ student) [B, T] over the teacher's top-k (``teacher_topk``) + one bucket."""
  lq = jax.nn.log_softmax(student_logits.astype(jnp.float32), axis=-1)        # [B, T, V]
  top_lq = jnp.take_along_axis(lq, idx, axis=-1)                               # [B, T, k]
  rest_lq = jax.nn.logsumexp(jnp.where(_in_top(lq.shape, idx), -jnp.inf, lq), axis=-1)
  kl_top = (jnp.exp(top_lp) * (top_lp - top_lq)).sum(-1)
  kl_rest = jnp.where(jnp.isfinite(rest_lp), jnp.exp(rest_lp) * (rest_lp - rest_lq), 0.0)
  return kl_top + kl_rest


def topk_bucket_kl(teacher_logits: jax.Array, student_logits: jax.Array, k: int = 50) -> jax.Array:
  """KL(teacher ‖ student) [B, T] over the teacher's top-k tokens + one bucket (float32).

  ``teacher_logits``, ``student_logits``: [B, T, V] for the same next tokens.
  """
  return bucket_kl(*teacher_topk(teacher_logits, k), student_logits)


def distill_loss(teacher_logits: jax.Array, student_logits: jax.Array, weights: jax.Array,
                 k: int = 50) -> dict:
  """The token-weighted CD loss as sums + counts: weights [B, T] (1 on the student's real
  tokens whose next token is predicted, 0 on padding)."""
  kl = topk_bucket_kl(jax.lax.stop_gradient(teacher_logits), student_logits, k)
  return {"loss_sum": (kl * weights).sum(), "loss_count": weights.sum()}


def cd_loss(model):
  """``loss_fn(params, batch, rng)`` for ``build.make_update``: the student (``params``) reads
  ``batch["inputs"]`` [B, T] without the prompt; the teacher's top-k for the same positions
  (``teacher_topk`` of the frozen LM with the prompt) come in the batch as ``t_lp``, ``t_idx``
  [B, T, k] and ``t_rest`` [B, T]; ``weights`` [B, T]. The student's head runs in chunks
  (``head.per_position``): no [B, T, V] logits kept for the backward."""
  def loss_fn(params, batch, rng):
    del rng
    x, w = model.apply({"params": params}, batch["inputs"], jnp.ones_like(batch["inputs"]),
                       method="head_inputs")
    kl = head.per_position(lambda logits, lp, idx, rest: bucket_kl(lp, idx, rest, logits), x, w,
                           batch["t_lp"], batch["t_idx"], batch["t_rest"])
    m = {"loss_sum": (kl * batch["weights"]).sum(), "loss_count": batch["weights"].sum()}
    return m["loss_sum"] / jnp.maximum(m["loss_count"], 1e-6), m
  return loss_fn


CD_BATCH_NDIMS = {"inputs": 2, "weights": 2, "t_lp": 3, "t_idx": 3, "t_rest": 2}
