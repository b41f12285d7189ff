"""Orbax checkpoints: async, sharded (each process writes its own shards), resumable.

A checkpoint holds two items: ``state`` (params, optimizer state, step, RNG) and ``data`` (the
data iterator's position, JSON). Resume order: this run's own latest checkpoint, then
``config.init_from`` (params only, from another run), then a fresh initialisation.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

import jax
import orbax.checkpoint as ocp

from hh import io


def manager(workdir: str, keep: int, interval: int) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(max_to_keep=keep, save_interval_steps=interval,
                                         enable_async_checkpointing=True)
  return ocp.CheckpointManager(os.path.join(io.abspath(workdir), "checkpoints"),
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
  """(state, data_state) from the latest readable checkpoint, each shard read in place; or None.

  A checkpoint that cannot be read (truncated or corrupted files) is named on stderr, moved to
  ``corrupt_checkpoints/<step>`` beside ``checkpoints/`` (so new saves of that step do not
  collide with it) and the previous one is used; none readable is a ValueError naming them.
  """
  failed = []
  for step in sorted(mngr.all_steps(), reverse=True):
    try:
      out = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(_restore_args(abstract_state, shardings)),
          data=ocp.args.JsonRestore()))
    except Exception as e:  # noqa: BLE001 — orbax/tensorstore raise many kinds on bad files
      reason = " ".join(str(e).split())[:160]
      failed.append(f"step {step} ({type(e).__name__}: {reason})")
      print(f"hh: checkpoint step {step} in {mngr.directory} is unreadable ({type(e).__name__}: "
            f"{reason}); trying the previous one", file=sys.stderr, flush=True)
      if jax.process_index() == 0:
        aside = os.path.join(os.path.dirname(str(mngr.directory)), "corrupt_checkpoints")
        io.makedirs(aside)
        io.rename(os.path.join(str(mngr.directory), str(step)),
                   os.path.join(aside, f"{step}.{int(time.time())}"))
      mngr.reload()
      continue
    return out.state, out.data
  if failed:
    raise ValueError(f"{mngr.directory}: no readable checkpoint ({'; '.join(failed)}); "
                     "restore one or use a new workdir")
  return None


def load_params(workdir: str, abstract_params: Any, shardings: Any, step: int | None = None):
  """Params only, from another run's workdir (``init_from``), restored straight into shards.

  Only the keys present in ``abstract_params`` are read, so a trunk can be loaded into a model
  that adds heads (their fresh values are kept by the caller). A Hugging Face model directory
  (``config.json`` with ``model_type``) is read from its safetensors files (hh/models/hf.py).
  """
  from hh.models import hf
  if hf.is_hf_dir(workdir):
    cfg = hf.model_config(workdir, _vocab(abstract_params))
    return hf.params(workdir, cfg, abstract_params, shardings)
  path = os.path.join(io.abspath(workdir), "checkpoints")
  if not io.isdir(path):
    raise FileNotFoundError(f"config.init_from={workdir!r}: no checkpoints/ folder there")
  with ocp.CheckpointManager(path, options=ocp.CheckpointManagerOptions(
      read_only=True, save_interval_steps=0, create=False)) as mngr:
    step = mngr.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"config.init_from={workdir!r}: no complete checkpoint in {path}")
    target = {"params": _restore_args(abstract_params, shardings)}
    try:
      restored = mngr.restore(step, args=ocp.args.Composite(
          state=ocp.args.PyTreeRestore(item=target, restore_args=jax.tree.map(
              lambda x: ocp.ArrayRestoreArgs(sharding=x.sharding), target),
              partial_restore=True)))
    except Exception as e:  # noqa: BLE001 — orbax raises many kinds for a mismatched tree
      reason = " ".join(str(e).split())[:200]
      raise ValueError(f"config.init_from={workdir!r}: its checkpoint (step {step}) does not fit "
                       f"this model: another model size or tokenizer, or unreadable files "
                       f"({type(e).__name__}: {reason})") from None
  _check_shapes(workdir, restored.state["params"], abstract_params)
  return restored.state["params"]


def _check_shapes(workdir: str, got: Any, want: Any):
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(want)):
    if a.shape != b.shape:
      name = "/".join(str(getattr(k, "key", k)) for k in path)
      raise ValueError(f"config.init_from={workdir!r}: parameter {name} is {a.shape} there and "
                       f"{b.shape} here (another model size or tokenizer); allowed: a run of "
                       "this model's shape")


def _vocab(abstract_params: Any) -> int:
  """The embedding rows of a model's params (hh's tokenizer may add rows to a checkpoint's)."""
  return abstract_params["trunk"]["embed"]["embedding"].shape[0]
