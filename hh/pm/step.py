"""The preference loss, the PM's score function and its loss for the shared update (Bai et al. 2022, §3.1,
§2.4).

A batch holds B comparisons as one trunk batch of 2B sequences: rows [0, B) are the chosen
(preferred) samples, rows [B, 2B) the rejected ones, each ending in the EOC token at ``eoc``.
"""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp


def preference_loss(r_good: jax.Array, r_bad: jax.Array, weights: jax.Array) -> dict:
  """L = log(1 + exp(r_bad − r_good)) per pair [B], as sums + counts (Bai et al. 2022, §3.1).

  ``weights`` [B] carries the helpful/harmless weighting (L_helpful + λ·L_harmless, Bai et al. 2022, §3.1, App. A.2:
  λ on each harmless pair) and masks padding pairs (0): the mean loss is Σ w·L / Σ w. Accuracy
  counts r_good > r_bad (ties are wrong) over the pairs with w > 0.
  """
  loss = jax.nn.softplus(r_bad - r_good)  # = log(1 + e^(r_bad − r_good)), stable
  correct = (r_good > r_bad).astype(jnp.float32)
  return {"loss_sum": (loss * weights).sum(), "loss_count": weights.sum(),
          "accuracy_sum": (correct * (weights > 0)).sum(),
          "accuracy_count": (weights > 0).sum().astype(jnp.float32)}


def score_fn(model: nn.Module) -> Callable[[dict, jax.Array, jax.Array, jax.Array], jax.Array]:
  """``(params, tokens [B, T], mask [B, T], eoc [B]) -> scores [B]``: the PM's scalar read at
  each row's EOC token — the one score function of training, evaluation, the scorer and RL."""
  def score(params, tokens, mask, eoc):
    return model.apply({"params": params}, tokens, mask, eoc)
  return score


def pair_scores(model: nn.Module, params, batch: dict) -> tuple[jax.Array, jax.Array]:
  """(r_good [B], r_bad [B]) from one forward pass over the 2B stacked sequences."""
  scores = score_fn(model)(params, batch["tokens"], batch["mask"], batch["eoc"])
  half = scores.shape[0] // 2
  return scores[:half], scores[half:]


def pm_loss(model: nn.Module):
  """``loss_fn(params, batch, rng) -> (weighted mean pair loss, metrics)`` for the shared update."""
  def loss_fn(params, batch, rng):
    del rng  # deterministic
    r_good, r_bad = pair_scores(model, params, batch)
    m = preference_loss(r_good, r_bad, batch["weight"])
    return m["loss_sum"] / jnp.maximum(m["loss_count"], 1e-6), m
  return loss_fn


BATCH_NDIMS = {"tokens": 2, "mask": 2, "eoc": 1, "weight": 1}  # the PM step's batch arrays
