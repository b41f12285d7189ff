"""The one runner: a single stage in its workdir, or the stages of ``config.stages`` in one.

``run_stage`` runs one registered stage (hh/stages.py) after checking its workdir's identity
and resolving its inputs, and saves the resolved config beside its outputs. ``run`` chains
``config.stages`` in one workdir, each stage in its own folder (``lm/``, ``pm/``; the world and
the report at the top) with a context naming the folders of the stages before it, so the PM
starts from this pipeline's LM and every stage reads this pipeline's world. A stage's result is
recorded (``stages/<name>.json``, hh/workdir.py) only after all its outputs are complete, so an
interrupted run redoes at most the unfinished stage — which itself resumes from its checkpoint.
A finished stage whose config changed is refused (the identity check), not silently reused.
Stages that run further stages (the online loop) get ``run_step`` through their context.
"""
from __future__ import annotations

import functools
import logging
import os

from hh import preemption, stages, validate
from hh import workdir as wd

PIPELINE = "pipeline"  # config.stage of a chain of stages (configs/pipeline.py)


def _context(world_dir: str | None, dirs: dict[str, str]) -> wd.Context:
  return wd.Context(world_dir=world_dir, dirs=dirs,
                    run_stage=functools.partial(run_step, world_dir=world_dir, dirs=dirs))


def run_stage(name: str, config, workdir: str, ctx: wd.Context | None = None) -> dict:
  """Runs stage ``name`` in ``workdir``: its identity checked and its inputs resolved before
  anything is written (a refused run writes nothing), then the config saved and the stage run."""
  stage = stages.get(name)
  ctx = ctx or _context(None, {})
  validate.check(config)
  inputs = stages.resolve(stage, config, ctx)
  stages.check_identity(name, config, workdir)
  wd.write_config(config, workdir)
  return stage.run(config, workdir, inputs, ctx)


def run_step(name: str, config, marker_dir: str, world_dir: str | None = None,
             dirs: dict[str, str] | None = None) -> dict:
  """Stage ``name`` in ``marker_dir/<name>`` unless ``marker_dir`` records it done → its result
  (the online loop's PM and PPO of each iteration)."""
  result = wd.done(marker_dir, name)
  if result is None:
    result = run_stage(name, config, os.path.join(marker_dir, name),
                       _context(world_dir, dict(dirs or {})))
    wd.mark(marker_dir, name, result)
  return result


def run(config, workdir: str) -> dict[str, dict]:
  """Runs ``config.stages`` in order in ``workdir``; returns each stage's result."""
  for name in config.stages:
    stages.get(name, "config.stages has")
  validate.check(config)
  dirs = {name: os.path.join(workdir, stages.REGISTRY[name].subdir or "").rstrip(os.sep)
          for name in config.stages}
  ctx = _context(workdir, dirs)
  for name in config.stages:  # every stage's workdir and inputs first: a refused run writes nothing
    stage = stages.REGISTRY[name]
    stages.resolve(stage, config, ctx)
    stages.check_identity(name, config, dirs[name])
  wd.write_config(config, workdir)
  results = {}
  for name in config.stages:
    stage = stages.REGISTRY[name]
    if preemption.requested():  # between stages: nothing to save
      raise preemption.Preempted(f"before stage {name}")
    result = wd.done(workdir, name)
    if result is None or stage.always_rerun:
      logging.info("stage %s: running", name)
      if stage.subdir:
        wd.write_config(config, dirs[name])
      result = stage.run(config, dirs[name], stages.resolve(stage, config, ctx), ctx)
      wd.mark(workdir, name, result)
    else:
      logging.info("stage %s: done already, skipped", name)
    results[name] = result
  return results


def summary(results: dict[str, dict]) -> list[str]:
  return [line for name, r in results.items() for line in stages.REGISTRY[name].summary(r)]


def run_config(config, workdir: str) -> tuple[dict, list[str]]:
  """``config.stage`` in ``workdir`` (one stage, or the pipeline) → (result, summary lines)."""
  if config.stage == PIPELINE:
    results = run(config, workdir)
    return results, summary(results)
  result = run_stage(config.stage, config, workdir)
  wd.mark(workdir, config.stage, result)  # the run in workdir has finished this stage
  return result, stages.get(config.stage).summary(result)
