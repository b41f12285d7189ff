"""The HH pipeline: a chain of stages in one workdir, each skipped when already done.

A stage writes ``stages/<name>.json`` (its result) only after all its outputs are complete, so an
interrupted run redoes at most the unfinished stage — and the LM stage itself resumes from its
checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable

import jax


def _marker(workdir: str, name: str) -> str:
  return os.path.join(workdir, "stages", f"{name}.json")


def done(workdir: str, name: str) -> dict | None:
  path = _marker(workdir, name)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def _mark(workdir: str, name: str, result: dict):
  if jax.process_index() != 0:
    return
  os.makedirs(os.path.join(workdir, "stages"), exist_ok=True)
  tmp = _marker(workdir, name) + ".tmp"
  with open(tmp, "w") as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, _marker(workdir, name))


def _world(config, workdir):
  from hh.sim import stage
  return stage.run(config.world.to_dict(), workdir)


def _lm(config, workdir):
  from hh.lm import train
  return train.train_and_evaluate(config, os.path.join(workdir, "lm"), world_workdir=workdir)


def _pm(config, workdir):
  from hh.pm import train
  result = train.train_and_evaluate(config, os.path.join(workdir, "pm"),
                                    lm_workdir=os.path.join(workdir, "lm"),
                                    world_workdir=workdir)
  return {k: v for k, v in result.items() if k != "phases"}


def _report(config, workdir):
  from hh import report
  return {"path": report.write(config, workdir)}


STAGES: dict[str, Callable] = {"world": _world, "lm": _lm, "pm": _pm, "report": _report}


def run(config, workdir: str) -> dict[str, dict]:
  """Runs ``config.stages`` in order; returns each stage's result."""
  unknown = [s for s in config.stages if s not in STAGES]
  if unknown:
    raise ValueError(f"config.stages has {unknown}; allowed: {', '.join(STAGES)}")
  results = {}
  for name in config.stages:
    result = done(workdir, name)
    if result is None or name == "report":
      logging.info("stage %s: running", name)
      result = STAGES[name](config, workdir)
      _mark(workdir, name, result)
    else:
      logging.info("stage %s: done already, skipped", name)
    results[name] = result
  return results
