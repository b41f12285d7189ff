"""The one stage registry: name → (run, summary, identity), used by ``hh.main`` and the pipeline.

A stage is run in its own workdir with a ``Context`` saying where the pipeline's other outputs
are. Before running, the stage's identity (the config keys its outputs depend on) is compared
with the one recorded in ``<stage workdir>/<stage>.identity.json`` by an earlier run: a workdir made
by another config is refused with one line naming the keys that differ, so a changed setting is
never silently mixed with old outputs. Keys that do not change results (``progress``,
``loop.stop_at``, ``loop.keep_ckpts``, ``mesh``, ``data_dirs``) are not part of it.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from typing import Any

import jax

from hh import config_diff, io, validate


@dataclasses.dataclass(frozen=True)
class Context:
  """Where a pipeline's outputs are (empty for a stage run on its own)."""
  world_dir: str | None = None                   # the workdir whose tfds/ holds hh_sim
  dirs: dict[str, str] = dataclasses.field(default_factory=dict)  # stage name → its workdir


@dataclasses.dataclass(frozen=True)
class Stage:
  name: str
  run: Callable[[Any, str, Context], dict]        # (config, stage workdir, context) → result
  summary: Callable[[dict], list[str]]            # the lines hh.main prints
  identity: Callable[[Any], dict] | None          # config keys its outputs depend on
  subdir: str | None = None                       # its folder inside a pipeline workdir
  always_rerun: bool = False                      # cheap views of other outputs (the report)
  saves_config: bool = True                       # config.json in its workdir before it runs


_VOLATILE = ("progress", "stop_at", "keep_ckpts")


def _strip(tree: Any) -> Any:
  if isinstance(tree, dict):
    return {k: _strip(v) for k, v in tree.items() if k not in _VOLATILE}
  return tree


# keys added after workdirs were made with them absent: at this value (the behaviour before
# them) they are left out of the identity, so those workdirs still resume
_LATER_DEFAULTS = {("online", "deploy_k"): 1}


def _subtrees(config, *keys: str) -> dict:
  """The named top-level blocks of ``config`` as JSON values, without volatile keys."""
  tree = _strip(json.loads(config.to_json_best_effort()))
  for (block, key), default in _LATER_DEFAULTS.items():
    if tree.get(block, {}).get(key, default) == default:
      tree.get(block, {}).pop(key, None)
  return {k: tree[k] for k in keys if k in tree}


def check_identity(stage: Stage, config, workdir: str):
  """Refuses ``workdir`` when it was made by a config that differs in the stage's identity;
  records the identity on the first run."""
  if stage.identity is None:
    return
  want = json.loads(json.dumps(stage.identity(config)))
  path = os.path.join(workdir, f"{stage.name}.identity.json")
  if os.path.exists(path):
    with open(path) as f:
      have = json.load(f)
    differ = config_diff.differing_keys(have, want)
    if differ:
      raise ValueError(f"{workdir} holds a {stage.name} stage made with another config (differs "
                       f"in {', '.join(differ[:8])}{' …' if len(differ) > 8 else ''}); use a new "
                       "workdir or the same config")
    return
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    io.write_text(path, json.dumps(want, indent=1, sort_keys=True))


def write_config(config, workdir: str):
  """The resolved config as ``workdir/config.json`` (what scorers and reports read back)."""
  if jax.process_index() != 0:
    return
  os.makedirs(workdir, exist_ok=True)
  io.write_text(os.path.join(workdir, "config.json"), config.to_json_best_effort(indent=1))


def _world(config, workdir, ctx):
  from hh.sim import stage
  return stage.run(config.world.to_dict(), workdir)


def _lm(config, workdir, ctx):
  from hh.lm import train
  return train.train_and_evaluate(config, workdir, world_dir=ctx.world_dir)


def _pm(config, workdir, ctx):
  from hh.pm import train
  return train.train_and_evaluate(config, workdir, world_dir=ctx.world_dir,
                                  lm_dir=ctx.dirs.get("lm"))


def _cd(config, workdir, ctx):
  from hh.rl import cd
  return cd.train_and_evaluate(config, workdir, world_dir=ctx.world_dir, lm_dir=ctx.dirs.get("lm"))


def _policies(config, workdir, ctx):
  from hh.rl import policies
  p = config.policies

  def need(value, stage, key):
    if value is None:
      raise ValueError(f"config.policies.{key}: the {stage} workdir is needed (or run the "
                       f"{stage} stage in the same pipeline)")
    return value
  ppo = p.ppo or ctx.dirs.get("ppo")
  return policies.run(config, workdir, need(p.lm or ctx.dirs.get("lm"), "lm", "lm"),
                      need(p.pi0 or ctx.dirs.get("cd"), "cd", "pi0"),
                      need(p.pm or ctx.dirs.get("pm"), "pm", "pm"), ctx.world_dir,
                      ppo_dir=os.path.join(ppo, "policy") if ppo else None)


def _ppo(config, workdir, ctx):
  from hh.rl import ppo_stage
  pi0 = config.ppo.init_from or ctx.dirs.get("cd")
  pm = config.ppo.pm or ctx.dirs.get("pm")
  for value, key in ((pi0, "init_from"), (pm, "pm")):
    if value is None:
      raise ValueError(f"config.ppo.{key}: a workdir is needed (or the stage in the same pipeline)")
  return ppo_stage.run(config, workdir, pi0, pm, ctx.world_dir)


def _online(config, workdir, ctx):
  from hh.rl import online
  o = config.online
  dirs = {k: getattr(o, key) or ctx.dirs.get(k) for k, key in (("lm", "lm"), ("pm", "pm"),
                                                               ("cd", "pi0"))}
  for k, key in (("lm", "lm"), ("pm", "pm"), ("cd", "pi0")):
    if dirs[k] is None:
      raise ValueError(f"config.online.{key}: the {k} workdir is needed (or run the {k} stage "
                       "in the same pipeline)")
  static = o.static or (os.path.join(ctx.dirs["ppo"], "policy") if "ppo" in ctx.dirs else None)
  return online.run(config, workdir, dirs["lm"], dirs["pm"], dirs["cd"], ctx.world_dir, static)


def _report(config, workdir, ctx):
  from hh import report
  return {"path": report.write(config, workdir)}


def _summary(module: str) -> Callable[[dict], list[str]]:
  def lines(result):
    import importlib
    return importlib.import_module(module).summary(result)
  return lines


def _uses_world(datasets) -> bool:
  return any(str(spec).startswith("hh_sim/") for spec, _ in datasets)


def _lm_identity(config) -> dict:
  out = _subtrees(config, "seed", "model", "tokenizer", "lm")
  if _uses_world(config.lm.data.datasets):
    out |= _subtrees(config, "world")
  return out


def _pm_identity(config) -> dict:
  out = _subtrees(config, "seed", "model", "tokenizer", "pm")
  if _uses_world(list(config.pm.pmp.datasets) + list(config.pm.finetune.datasets)):
    out |= _subtrees(config, "world")
  return out


def _cd_identity(config) -> dict:
  out = _subtrees(config, "seed", "model", "tokenizer", "cd")
  if _uses_world(config.cd.data.datasets) or config.cd.prompt.startswith("hh_sim/"):
    out |= _subtrees(config, "world")
  return out


def _world_summary(result: dict) -> list[str]:
  c = result["ceilings"]
  return [f"world: tranches {result['tranches']}; Bayes ceiling helpful/test "
          f"{c['helpful/test']['bayes_ceiling']:.3f}, harmless/test "
          f"{c['harmless/test']['bayes_ceiling']:.3f}"]


def _pipeline(config, workdir, ctx):
  from hh import pipeline
  return pipeline.run(config, workdir)


def _pipeline_summary(results: dict) -> list[str]:
  from hh import pipeline
  return pipeline.summary(results)


REGISTRY: dict[str, Stage] = {s.name: s for s in (
    Stage("world", _world, _world_summary, lambda c: _subtrees(c, "world")),
    Stage("lm", _lm, _summary("hh.lm.train"), _lm_identity, subdir="lm"),
    Stage("pm", _pm, _summary("hh.pm.train"), _pm_identity, subdir="pm"),
    Stage("cd", _cd, _summary("hh.rl.cd"), _cd_identity, subdir="cd"),
    Stage("policies", _policies, _summary("hh.rl.policies"),
          lambda c: _subtrees(c, "seed", "world", "sampling", "policies", "cd", "ppo"),
          subdir="policies"),
    Stage("ppo", _ppo, _summary("hh.rl.ppo_stage"),
          lambda c: _subtrees(c, "seed", "model", "world", "sampling", "ppo"), subdir="ppo"),
    Stage("online", _online, _summary("hh.rl.online"),
          lambda c: _subtrees(c, "seed", "model", "tokenizer", "world", "sampling", "lm", "pm",
                              "ppo", "online"), subdir="online"),
    Stage("report", _report, lambda r: [f"report: {r['path']}"], None, always_rerun=True),
    # the chain of config.stages in one workdir (hh/pipeline.py)
    Stage("pipeline", _pipeline, _pipeline_summary, None, saves_config=False),
)}


def get(name: str, where: str = "config.stage") -> Stage:
  if name not in REGISTRY or (where != "config.stage" and name == "pipeline"):
    allowed = [n for n in REGISTRY if where == "config.stage" or n != "pipeline"]
    raise ValueError(f"{where} {name!r}; allowed: {', '.join(allowed)}")
  return REGISTRY[name]


def run(name: str, config, workdir: str, ctx: Context = Context()) -> dict:
  """Runs one stage in ``workdir`` after checking the workdir's identity (a refused run writes
  nothing); the resolved config is saved beside the stage's outputs."""
  stage = get(name)
  validate.check(config)
  check_identity(stage, config, workdir)
  if stage.saves_config:
    write_config(config, workdir)
  return stage.run(config, workdir, ctx)
