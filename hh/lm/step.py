"""Next-token loss, LM log-likelihoods, and the LM loss function the shared update runs
(pure functions; STYLE §5–7)."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


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
  """
  logits = model.apply({"params": params}, tokens, mask)                      # [B, T, V]
  logz = jax.nn.logsumexp(logits[:, :-1], axis=-1)                           # [B, T-1]
  picked = jnp.take_along_axis(logits[:, :-1], tokens[:, 1:, None], axis=-1).squeeze(-1)
  real = (mask[:, 1:] * mask[:, :-1]).astype(jnp.float32)
  return jnp.pad((picked - logz) * real, ((0, 0), (1, 0)))


def lm_loss(model: nn.Module):
  """``loss_fn(params, batch, rng) -> (mean token loss, metrics)`` for ``build.make_update``.

  ``batch``: inputs, targets, weights [B, T] (packed windows: every position is real).
  """
  def loss_fn(params, batch, rng):
    del rng  # no dropout (SPEC: none is used)
    m = eval_metrics(model, params, batch)
    return m["loss_sum"] / jnp.maximum(m["loss_count"], 1e-6), m
  return loss_fn


def eval_metrics(model: nn.Module, params, batch: dict) -> dict:
  """Loss and accuracy of a batch as sums plus counts."""
  logits = model.apply({"params": params}, batch["inputs"], jnp.ones_like(batch["inputs"]))
  return next_token_loss(logits, batch["targets"], batch["weights"])
