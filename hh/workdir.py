"""What a workdir holds, for every stage and runner: the ground floor of the orchestration.

  <workdir>/config.json              the resolved config (written before a stage runs)
  <workdir>/<stage>.identity.json    the config keys the stage's outputs depend on
  <workdir>/stages/<name>.json       a step's result, written once all its outputs are complete
  <ppo workdir>/policy/              the trained policy, exported as an LM workdir

A runner (hh/pipeline.py) hands each stage a ``Context``: where the other stages' outputs are and
how to run a further stage (the online loop runs a PM and a PPO stage per iteration through it),
so nothing below the runner imports it.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax

from hh import config_diff, io

WAIT_EXIT_CODE = 3  # a run that stopped to wait for outside input: the same command goes on


class Waiting(Exception):
  """A step stopped to wait for something made outside hh (people's judgements); the message
  says what, where, and that the same command goes on once it is there."""


@dataclasses.dataclass(frozen=True)
class Context:
  """Where a pipeline's outputs are (empty for a stage run on its own)."""
  world_dir: str | None = None                   # the workdir whose tfds/ holds hh_sim
  dirs: dict[str, str] = dataclasses.field(default_factory=dict)  # stage name → its workdir
  # (stage name, config, marker dir) → result: runs the stage in <marker dir>/<name> unless
  # <marker dir>/stages/<name>.json says it is done (hh/pipeline.py's ``run_step``)
  run_stage: Callable[[str, Any, str], dict] | None = None


def _marker(workdir: str, name: str) -> str:
  return os.path.join(workdir, "stages", f"{name}.json")


def done(workdir: str, name: str) -> dict | None:
  """The result of step ``name`` of the run in ``workdir``, or None while it is not complete."""
  path = _marker(workdir, name)
  if not io.exists(path):
    return None
  return io.read_json(path)


def mark(workdir: str, name: str, result: dict):
  """Records step ``name`` as complete (after all its outputs are written). With several
  processes, process 0 writes the record and every process waits for it here (they all mark
  the same steps): what process 0 alone writes — records, a PM's result, an exported policy — is
  there for every process's next step (without it the online loop's process 1 read an
  iteration's tranche record before process 0 had written it)."""
  if jax.process_index() == 0:
    io.makedirs(os.path.join(workdir, "stages"))
    io.write_json(_marker(workdir, name), result)
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(f"hh: {name} marked in {workdir}")


def write_config(config, workdir: str):
  """The resolved config as ``workdir/config.json`` (what scorers and reports read back)."""
  if jax.process_index() != 0:
    return
  io.makedirs(workdir)
  io.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=1))


def policy_dir(path: str) -> str:
  """A PPO stage's exported policy: ``path`` itself when it is the export, else ``path/policy``."""
  sub = os.path.join(path, "policy")
  return sub if io.isdir(sub) else path


# keys that do not change a stage's outputs, left out of its identity
_VOLATILE = ("progress", "stop_at", "keep_ckpts")


def _strip(tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _strip(v) for k, v in tree.items() if k not in _VOLATILE}
  return tree


def subtrees(config, *keys: str) -> dict:
  """The named top-level blocks of ``config`` as JSON values, without volatile keys."""
  tree = _strip(json.loads(config.to_json_best_effort()))
  return {k: tree[k] for k in keys if k in tree}


def check_identity(name: str, identity: dict | None, workdir: str):
  """Refuses ``workdir`` when stage ``name`` there was made by a config that differs in
  ``identity`` (the config keys its outputs depend on); records the identity on the first run."""
  if identity is None:
    return
  want = json.loads(json.dumps(identity))
  path = os.path.join(workdir, f"{name}.identity.json")
  if io.exists(path):
    have = io.read_json(path)
    differ = config_diff.differing_keys(have, want)
    if differ:
      raise ValueError(f"{workdir} holds a {name} stage made with another config (differs "
                       f"in {', '.join(differ[:8])}{' …' if len(differ) > 8 else ''}); use a new "
                       "workdir or the same config")
    return
  if jax.process_index() == 0:
    io.makedirs(workdir)
    io.write_text(path, json.dumps(want, indent=1, sort_keys=True))
