"""Orbax checkpoints: async, sharded (each process writes its own shards), resumable.

A checkpoint holds two items: ``state`` (params, optimizer state, step, RNG) and ``data`` (the
data iterator's position, JSON). Resume order (STYLE §8): this run's own latest checkpoint, then
``config.init_from`` (params only, from another run), then a fresh initialisation.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import orbax.checkpoint as ocp


def manager(workdir: str, keep: int, interval: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=interval,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.join(os.path.abspath(workdir), "checkpoints"),
                               options=options)


def save(mngr: ocp.CheckpointManager, step: int, state: Any, data_state: dict,
         force: bool = False) -> bool:
  """Starts an async save (returns at once); ``force`` saves off the interval (e.g. the end)."""
  return mngr.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                 data=ocp.args.JsonSave(data_state)), force=force)


def _restore_args(abstract_state: Any, shardings: Any) -> Any:
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract_state, shardings)


def restore_latest(mngr: ocp.CheckpointManager, abstract_state: Any, shardings: Any):
  """(state, data_state) from the latest complete checkpoint, each shard read in place; or None."""
  step = mngr.latest_step()
  if step is None:
    return None
  out = mngr.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(_restore_args(abstract_state, shardings)),
      data=ocp.args.JsonRestore()))
  return out.state, out.data


def load_params(workdir: str, abstract_params: Any, shardings: Any, step: int | None = None):
  """Params only, from another run's workdir (``init_from``), restored straight into shards.

  Only the keys present in ``abstract_params`` are read, so a trunk can be loaded into a model
  that adds heads (their fresh values are kept by the caller).
  """
  path = os.path.join(os.path.abspath(workdir), "checkpoints")
  if not os.path.isdir(path):
    raise FileNotFoundError(f"config.init_from={workdir!r}: no checkpoints/ folder there")
  with ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(
      read_only=True, save_interval_steps=0, create=False)) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"config.init_from={workdir!r}: no complete checkpoint in {path}")
    target = {"params": _restore_args(abstract_params, shardings)}
    restored = mngr.restore(step, args=ocp.args.Composite(
        state=ocp.args.PyTreeRestore(item=target, restore_args=jax.tree.map(
            lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target),
            partial_restore=True)))
  return restored.state["params"]
