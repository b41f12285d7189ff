"""The preference loss and the jitted, sharded PM train step (SPEC §2.2, §2.4).

A batch holds B comparisons as one trunk batch of 2B sequences: rows [0, B) are the chosen
(preferred) samples, rows [B, 2B) the rejected ones, each ending in the EOC token at ``eoc``.
"""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hh.train.state import TrainState


def preference_loss(r_good: jax.Array, r_bad: jax.Array, weights: jax.Array) -> dict:
  """L = log(1 + exp(r_bad − r_good)) per pair [B], as sums + counts (SPEC §2.2).

  ``weights`` [B] carries the helpful/harmless weighting (L_helpful + λ·L_harmless, SPEC §2.4)
  and masks padding pairs. Accuracy counts r_good > r_bad (ties are wrong).
  """
  loss = jax.nn.softplus(r_bad - r_good)  # = log(1 + e^(r_bad − r_good)), stable
  correct = (r_good > r_bad).astype(jnp.float32)
  return {"loss_sum": (loss * weights).sum(), "loss_count": weights.sum(),
          "accuracy_sum": (correct * (weights > 0)).sum(),
          "accuracy_count": (weights > 0).sum().astype(jnp.float32)}


def pair_scores(model: nn.Module, params, batch: dict) -> tuple[jax.Array, jax.Array]:
  """(r_good [B], r_bad [B]) from one forward pass over the 2B stacked sequences."""
  scores = model.apply({"params": params}, batch["tokens"], batch["mask"], batch["eoc"])
  half = scores.shape[0] // 2
  return scores[:half], scores[half:]


def make_pm_train_step(model: nn.Module, tx: optax.GradientTransformation,
                       axis_rules) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """``(state, batch) -> (state, metrics)``: one AdamW step on the weighted mean pair loss."""

  def loss_fn(params, batch):
    r_good, r_bad = pair_scores(model, params, batch)
    m = preference_loss(r_good, r_bad, batch["weight"])
    return m["loss_sum"] / jnp.maximum(m["loss_count"], 1e-6), m

  def pm_train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    with nn.logical_axis_rules(axis_rules):
      grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    one = jnp.ones((), jnp.float32)
    metrics = {**metrics, "grad_norm_sum": optax.tree.norm(grads), "grad_norm_count": one}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return pm_train_step
