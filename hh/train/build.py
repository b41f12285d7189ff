"""One way to set up a stage: mesh-sharded state by shape, the guards, one jitted update.

Every training stage (LM, PM phases, and the policy stages after them) is a loss, a data source
and a config on these pieces:

* ``make_update(loss_fn, tx, axis_rules)``: the update every stage shares — ``loss_fn(params,
  batch, rng) -> (loss, metrics)`` differentiated, clipped AdamW applied, gradient and parameter
  norms added to the metrics. The step's randomness is ``fold_in(state.rng, state.step)``.
* ``build(...)``: abstract state by ``eval_shape`` → shardings from the logical rules → the
  divisibility and replication guards → the update jitted with explicit shardings and donated
  state (big_vision / MaxText style). Nothing is allocated until ``create_state``.
* ``initial_state(...)``: the documented resume order — this run's own checkpoint
  (with the data position), then ``init_from`` (a function of the fresh state), then fresh.
* ``inference_params(...)``: a trained model's params restored straight into their shards,
  with the matching jitted forward — for scorers, probes, OOD and benchmarks.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from hh import sharding
from hh.train import checkpoint
from hh.train import state as state_lib
from hh.train.state import TrainState

# loss_fn(params, batch, rng) -> (scalar loss, metrics as sums + counts)
LossFn = Callable[[Any, dict, jax.Array], tuple[jax.Array, dict]]


def make_update(loss_fn: LossFn, tx: optax.GradientTransformation,
                axis_rules=()) -> Callable[[TrainState, dict], tuple[TrainState, dict]]:
  """``(state, batch) -> (state, metrics)``: one optimizer step on ``loss_fn``'s loss.

  Adds ``grad_norm`` (before clipping) and ``param_norm`` (after the step) as sum + count, so
  the loop averages them over its log interval like every other metric.
  """

  def update(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)
    with nn.logical_axis_rules(axis_rules):
      grads, metrics = jax.grad(loss_fn, has_aux=True)(state.params, batch, rng)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    one = jnp.ones((), jnp.float32)  # per-step values are averaged over the log interval
    metrics = {**metrics, "grad_norm_sum": optax.tree.norm(grads), "grad_norm_count": one,
               "param_norm_sum": optax.tree.norm(params), "param_norm_count": one}
    return state.replace(step=state.step + 1, params=params, opt_state=opt_state), metrics

  return update


@dataclasses.dataclass(frozen=True)
class Built:
  """What ``build`` returns: the pieces a stage runs with (all shardings explicit)."""
  model: nn.Module
  tx: optax.GradientTransformation
  mesh: Mesh
  rules: tuple
  init: Callable[[], TrainState]   # boxed initial state, for eval_shape / jit
  abstract: TrainState             # unboxed ShapeDtypeStructs
  shardings: TrainState            # NamedShardings of the same tree
  batch_shardings: dict
  train_step: Callable[[TrainState, dict], tuple[TrainState, dict]]

  def create(self) -> TrainState:
    return state_lib.create_state(self.init, self.shardings)


@dataclasses.dataclass(frozen=True)
class StateSpec:
  """A state known by shape and sharding, made only when no checkpoint has it (a stage whose
  state is not one TrainState: PPO's policy, value and KL coefficient)."""
  abstract: Any                    # ShapeDtypeStructs
  shardings: Any                   # NamedShardings of the same tree
  create: Callable[[], Any]        # the fresh state, allocated


def state_spec(fresh: Callable, *args) -> StateSpec:
  """``fresh(*args)`` by shape and by the shardings XLA gives its outputs (compiled, not run):
  nothing is allocated until ``create``."""
  compiled = jax.jit(fresh).lower(*args).compile()
  return StateSpec(abstract=jax.eval_shape(fresh, *args), shardings=compiled.output_shardings,
                   create=lambda: compiled(*args))


def build(model: nn.Module, tx: optax.GradientTransformation, example: tuple,
          loss_fn: LossFn, batch_ndims: dict[str, int], *, mesh: Mesh, rules, seed: int,
          max_replicated_fraction: float) -> Built:
  """State by shape, both guards, and the jitted, donated update of ``loss_fn``.

  ``example``: arguments of ``model.init`` (shapes only matter); ``batch_ndims``: the rank of
  each batch array, all sharded on their leading (batch) axis over data × fsdp.
  """
  init = state_lib.init_fn(model, tx, example, seed)
  abstract, shardings = state_lib.abstract_state(init, mesh, rules)
  sharding.check_divisible(abstract.params, shardings.params)
  sharding.check_replication(abstract.params, shardings.params, mesh, max_replicated_fraction)
  batch_sh = {k: sharding.batch_sharding(mesh, n) for k, n in batch_ndims.items()}
  train_step = jax.jit(make_update(loss_fn, tx, rules), in_shardings=(shardings, batch_sh),
                       out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  return Built(model=model, tx=tx, mesh=mesh, rules=rules, init=init, abstract=abstract,
               shardings=shardings, batch_shardings=batch_sh, train_step=train_step)


def initial_state(built: Built | StateSpec, mngr, data_iter=None,
                  init_from: Callable[[TrainState], TrainState] | None = None) -> TrainState:
  """This run's own checkpoint (restoring ``data_iter``'s position too) → ``init_from(fresh)``
  → fresh. ``init_from`` returns the fresh state with loaded params (and a matching new
  optimizer state); it runs only when there is no own checkpoint. Restoring reads straight into
  the shardings of ``built``: nothing is allocated before it."""
  restored = checkpoint.restore_latest(mngr, built.abstract, built.shardings)
  if restored is not None:
    state, data_state = restored
    if data_iter is not None:
      data_iter.restore(data_state)
    return state
  state = built.create()
  return init_from(state) if init_from is not None else state


def with_params(built: Built, state: TrainState, params) -> TrainState:
  """``state`` with new params and a fresh optimizer state for them (sharded as the state)."""
  opt_state = jax.jit(built.tx.init, out_shardings=built.shardings.opt_state)(params)
  return state.replace(params=params, opt_state=opt_state)


def params_by_shape(model: nn.Module, example: tuple, mesh: Mesh, rules):
  """(abstract unboxed params, their NamedShardings) — nothing allocated."""
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *example))["params"]
  return nn.unbox(boxed), sharding.logical_shardings(boxed, mesh, rules)


def inference_params(model: nn.Module, example: tuple, workdir: str, mesh: Mesh, rules):
  """A trained run's params (``workdir``'s latest checkpoint) restored into their shards."""
  abstract, shardings = params_by_shape(model, example, mesh, rules)
  return checkpoint.load_params(workdir, abstract, shardings)


def jit_forward(fn: Callable, mesh: Mesh, rules, out_shardings=None) -> Callable:
  """``fn(params, *arrays)`` jitted under the logical rules; outputs replicated (for the host)
  unless ``out_shardings`` says otherwise (e.g. batch-sharded, for a train step's input)."""
  def forward(params, *args):
    with nn.logical_axis_rules(rules):
      return fn(params, *args)
  return jax.jit(forward, out_shardings=out_shardings or sharding.replicated(mesh))
