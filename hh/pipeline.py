"""The HH pipeline: the stages of ``config.stages`` in one workdir, each skipped when done.

Each stage comes from the one registry (hh/stages.py) and runs in its own folder (``lm/``,
``pm/``; the world and the report at the top), with a context naming the folders of the stages
before it, so the PM starts from this pipeline's LM and every stage reads this pipeline's world.
A stage writes ``stages/<name>.json`` (its result) only after all its outputs are complete, so an
interrupted run redoes at most the unfinished stage — which itself resumes from its checkpoint.
A finished stage whose config changed is refused (the identity check), not silently reused.
"""
from __future__ import annotations

import json
import logging
import os

import jax

from hh import io, stages


def _marker(workdir: str, name: str) -> str:
  return os.path.join(workdir, "stages", f"{name}.json")


def done(workdir: str, name: str) -> dict | None:
  path = _marker(workdir, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def mark(workdir: str, name: str, result: dict):
  if jax.process_index() != 0:
    return
  os.makedirs(os.path.join(workdir, "stages"), exist_ok=True)
  io.write_json(_marker(workdir, name), result)


def run(config, workdir: str) -> dict[str, dict]:
  """Runs ``config.stages`` in order; returns each stage's result."""
  for name in config.stages:
    stages.get(name, "config.stages has")
  dirs = {name: os.path.join(workdir, stages.REGISTRY[name].subdir or "")
          for name in config.stages}
  ctx = stages.Context(world_dir=workdir, dirs=dirs)
  for name in config.stages:  # every stage's workdir first: a refused run writes nothing
    stages.check_identity(stages.REGISTRY[name], config, dirs[name].rstrip(os.sep))
  stages.write_config(config, workdir)
  results = {}
  for name in config.stages:
    stage = stages.REGISTRY[name]
    stage_dir = dirs[name].rstrip(os.sep)
    result = done(workdir, name)
    if result is None or stage.always_rerun:
      logging.info("stage %s: running", name)
      if stage.saves_config:
        stages.write_config(config, stage_dir)
      result = stage.run(config, stage_dir, ctx)
      mark(workdir, name, result)
    else:
      logging.info("stage %s: done already, skipped", name)
    results[name] = result
  return results


def summary(results: dict[str, dict]) -> list[str]:
  return [line for name, r in results.items() for line in stages.REGISTRY[name].summary(r)]
