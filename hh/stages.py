"""The one stage registry: name → (run, summary, identity, inputs).

A stage is a loss + a data source + a config on the shared build and loop; here it is also a
name, the config keys its outputs depend on (its identity: a workdir made by another config is
refused, naming the keys that differ) and the other stages' outputs it needs. ``needs`` maps a
key of the stage's config block to the stage that makes it: ``config.ppo.init_from`` is a ``cd``
workdir, ``config.ppo.pm`` a ``pm`` one. ``resolve`` serves them all the same way: the config's
value when set, else the pipeline's own stage of that name, else one line naming the key.

Nothing here imports the runner (hh/pipeline.py); stage modules are imported when their stage
runs, so ``import hh.stages`` stays light.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from hh import io
from hh import workdir as wd


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  # (config, stage workdir, resolved inputs, context) → result
  run: Callable[[Any, str, dict[str, str | None], wd.Context], dict]
  summary: Callable[[dict], list[str]]            # the lines hh.main prints
  identity: Callable[[Any], dict] | None          # config keys its outputs depend on
  subdir: str | None = None                       # its folder inside a pipeline workdir
  needs: dict[str, str] = dataclasses.field(default_factory=dict)  # config key → stage
  optional: tuple[str, ...] = ()                  # needs that may stay unset
  always_rerun: bool = False                      # cheap views of other outputs (the report)


def resolve(stage: Stage, config, ctx: wd.Context) -> dict[str, str | None]:
  """``config.<stage>.<key>`` for each of the stage's needs, else the pipeline's stage of that
  kind → {key: workdir or None}; a required input that is neither is one line naming the key."""
  block = config.get(stage.name, {})
  out = {}
  for key, maker in stage.needs.items():
    given = block.get(key)
    if given and not io.isdir(given):
      raise ValueError(f"config.{stage.name}.{key}={given!r}: no such folder (a {maker} workdir "
                       "is expected)")
    value = given or ctx.dirs.get(maker)
    if value is None and key not in stage.optional:
      raise ValueError(f"config.{stage.name}.{key}: a {maker} workdir is needed (or run the "
                       f"{maker} stage in the same pipeline)")
    out[key] = value
  return out


def _world(config, workdir, inputs, ctx):
  from hh.sim import stage
  return stage.run(config.world.to_dict(), workdir)


def _lm(config, workdir, inputs, ctx):
  from hh.lm import train
  return train.train_and_evaluate(config, workdir, world_dir=ctx.world_dir)


def _pm(config, workdir, inputs, ctx):
  from hh.pm import train
  return train.train_and_evaluate(config, workdir, world_dir=ctx.world_dir,
                                  lm_dir=inputs["init_from"])


def _cd(config, workdir, inputs, ctx):
  from hh.cd import train
  return train.train_and_evaluate(config, workdir, world_dir=ctx.world_dir,
                                  lm_dir=inputs["init_from"])


def _test_pm(config, workdir, inputs, ctx):
  """A held-out PM: the pm stage on ``config.test_pm`` (other comparisons), never trained on by
  PPO; it scores the policies where no gold annotator exists (Bai et al. 2022, §4.2)."""
  from hh.pm import train
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.pm = config.test_pm
  return train.train_and_evaluate(config, workdir, world_dir=ctx.world_dir,
                                  lm_dir=inputs["init_from"])


def _ppo(config, workdir, inputs, ctx):
  from hh.ppo import train
  return train.run(config, workdir, inputs["init_from"], inputs["pm"], ctx.world_dir,
                   test_pm_dir=inputs.get("test_pm"))


def _policies(config, workdir, inputs, ctx):
  from hh.policy import stage
  ppo = inputs["ppo"]
  return stage.run(config, workdir, inputs["lm"], inputs["pi0"], inputs["pm"], ctx.world_dir,
                   ppo_dir=wd.policy_dir(ppo) if ppo else None,
                   test_pm_dir=inputs.get("test_pm"))


def _online(config, workdir, inputs, ctx):
  from hh.online import loop
  static = inputs["static"]
  return loop.run(config, workdir, inputs["lm"], inputs["pm"], inputs["pi0"], ctx,
                  wd.policy_dir(static) if static else None)


def _report(config, workdir, inputs, ctx):
  from hh import report
  return {"path": report.write(config, workdir)}


def _summary(module: str, name: str | None = None) -> Callable[[dict], list[str]]:
  """The stage module's summary lines; ``name``: the stage's, where the module serves two."""
  def lines(result):
    out = importlib.import_module(module).summary(result)
    return [f"{name}:{line.split(':', 1)[1]}" for line in out] if name else out
  return lines


def _world_summary(result: dict) -> list[str]:
  c = result["ceilings"]
  return [f"world: tranches {result['tranches']}; Bayes ceiling helpful/test "
          f"{c['helpful/test']['bayes_ceiling']:.3f}, harmless/test "
          f"{c['harmless/test']['bayes_ceiling']:.3f}"]


def _uses_world(*datasets) -> bool:
  return any(str(d[0] if isinstance(d, (tuple, list)) else d).startswith("hh_sim/")
             for d in datasets)


def _trained(block: str, datasets: Callable[[Any], list]) -> Callable[[Any], dict]:
  """A trained stage's identity: seed, model, tokenizer and its block, plus the world when one
  of its ``datasets(config)`` is the world's."""
  def identity(config) -> dict:
    out = wd.subtrees(config, "seed", "model", "tokenizer", block)
    return out | (wd.subtrees(config, "world") if _uses_world(*datasets(config)) else {})
  return identity


def _keys(*keys: str) -> Callable[[Any], dict]:
  return lambda config: wd.subtrees(config, *keys)


REGISTRY: dict[str, Stage] = {s.name: s for s in (
    Stage("world", _world, _world_summary, _keys("world")),
    Stage("lm", _lm, _summary("hh.lm.train"),
          _trained("lm", lambda c: list(c.lm.data.datasets)), subdir="lm"),
    Stage("pm", _pm, _summary("hh.pm.train"),
          _trained("pm", lambda c: list(c.pm.pmp.datasets) + list(c.pm.finetune.datasets)),
          subdir="pm", needs={"init_from": "lm"}, optional=("init_from",)),
    Stage("test_pm", _test_pm, _summary("hh.pm.train", "test_pm"),
          _trained("test_pm", lambda c: list(c.test_pm.pmp.datasets)
                   + list(c.test_pm.finetune.datasets)),
          subdir="test_pm", needs={"init_from": "lm"}, optional=("init_from",)),
    Stage("cd", _cd, _summary("hh.cd.train"),
          _trained("cd", lambda c: list(c.cd.data.datasets) + [c.cd.prompt]), subdir="cd",
          needs={"init_from": "lm"}),
    Stage("ppo", _ppo, _summary("hh.ppo.train"),
          _keys("seed", "model", "world", "sampling", "ppo"), subdir="ppo",
          needs={"init_from": "cd", "pm": "pm", "test_pm": "test_pm"}, optional=("test_pm",)),
    Stage("policies", _policies, _summary("hh.policy.stage"),
          _keys("seed", "world", "sampling", "policies", "cd", "ppo"), subdir="policies",
          needs={"lm": "lm", "pi0": "cd", "pm": "pm", "ppo": "ppo", "test_pm": "test_pm"},
          optional=("ppo", "test_pm")),
    Stage("online", _online, _summary("hh.online.loop"),
          _keys("seed", "model", "tokenizer", "world", "sampling", "lm", "pm", "ppo", "online"),
          subdir="online", needs={"lm": "lm", "pm": "pm", "pi0": "cd", "static": "ppo"},
          optional=("static",)),
    Stage("report", _report, lambda r: [f"report: {r['path']}"], None, always_rerun=True),
)}


def get(name: str, where: str = "config.stage") -> Stage:
  if name not in REGISTRY:
    raise ValueError(f"{where} {name!r}; allowed: {', '.join(REGISTRY)}")
  return REGISTRY[name]


def check_identity(name: str, config, workdir: str):
  """Refuses ``workdir`` when stage ``name`` there was made by a config that differs in the
  stage's identity; records the identity on the first run (hh/workdir.py)."""
  stage = get(name)
  wd.check_identity(name, stage.identity and stage.identity(config), workdir)
