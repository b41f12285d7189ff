"""Next-token loss and the jitted LM train/eval steps (pure functions; STYLE §5–7)."""
from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hh.train.state import TrainState


def next_token_loss(logits: jax.Array, targets: jax.Array, weights: jax.Array):
  """Masked cross-entropy as (sum, count): logits [B, T, V] f32, targets [B, T], weights [B, T].

  loss_sum = Σ_bt w_bt · (logsumexp(logits_bt) − logits_bt[target_bt]); count = Σ w.
  """
  logz = jax.nn.logsumexp(logits, axis=-1)                                   # [B, T]
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  nll = logz - target_logit
  correct = (jnp.argmax(logits, -1) == targets).astype(jnp.float32)
  return {"loss_sum": (nll * weights).sum(), "loss_count": weights.sum(),
          "accuracy_sum": (correct * weights).sum(), "accuracy_count": weights.sum()}


def _forward_metrics(model: nn.Module, params, batch):
  mask = jnp.ones_like(batch["inputs"])
  logits, _ = model.apply({"params": params}, batch["inputs"], mask)
  return next_token_loss(logits, batch["targets"], batch["weights"])


def make_train_step(model: nn.Module, tx: optax.GradientTransformation,
                    axis_rules) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """``(state, batch) -> (state, metrics)``: one AdamW update on the mean token loss."""

  def loss_fn(params, batch):
    m = _forward_metrics(model, params, batch)
    return m["loss_sum"] / jnp.maximum(m["loss_count"], 1.0), m

  def train_step(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    with nn.logical_axis_rules(axis_rules):
      grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    one = jnp.ones((), jnp.float32)  # per-step values are averaged over the log interval
    metrics = {**metrics, "grad_norm_sum": optax.tree.norm(grads), "grad_norm_count": one,
               "param_norm_sum": optax.tree.norm(params), "param_norm_count": one}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return train_step


def make_eval_step(model: nn.Module, axis_rules) -> Callable[[dict, dict], dict]:
  """``(params, batch) -> metrics`` as sums plus counts."""
  def eval_step(params, batch):
    with nn.logical_axis_rules(axis_rules):
      return _forward_metrics(model, params, batch)
  return eval_step
