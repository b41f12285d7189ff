"""Shared by the figure scripts: launch runs through the CLI (skipping finished ones), read
their outputs. No training logic lives here: every run is ``python -m hh.main`` with a config.

Runs go under ``$HH_EXPERIMENTS`` (default ``runs/experiments``); figures under its
``figures/``. Each size's world + pretrained LM is built once (``base_<size>``) and shared.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from hh import workdir as wd

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.abspath(os.environ.get("HH_EXPERIMENTS", os.path.join(REPO, "runs",
                                                                     "experiments")))
# The PM figures' ladder, ~4× apart (configs/sizes.py). It stops at tiny: with 1,200 LM steps
# the small LM (3.2M) knew no more than the tiny one on the default world, and at 2,400 steps its
# LM alone would take ~16 of the set's 60 minutes.
LADDER = ("nano", "micro", "mini", "tiny")


def hh_main(config: str, workdir: str, *overrides: str):
  """``python -m hh.main --config=CONFIG --workdir=WORKDIR OVERRIDES`` (fails loudly)."""
  cmd = [sys.executable, "-m", "hh.main", f"--config={config}", f"--workdir={workdir}",
         "--config.progress=False", *overrides]
  print("$", " ".join(cmd[1:]), flush=True)
  subprocess.run(cmd, cwd=REPO, check=True)


def base(size: str) -> str:
  """World + pretrained LM of one size (the pipeline's first two stages)."""
  workdir = os.path.join(ROOT, f"base_{size}")
  if wd.done(workdir, "lm") is None:
    hh_main(f"configs/pipeline.py:size={size}", workdir, "--config.stages=('world','lm')")
  return workdir


def pm(name: str, size: str, *overrides: str, pmp: bool = False) -> str:
  """A PM run on the synthetic world from ``base(size)``; returns its workdir."""
  b = base(size)
  workdir = os.path.join(ROOT, name)
  if wd.done(workdir, "pm") is None:
    hh_main(f"configs/pm.py:size={size},data=sim,pmp={pmp}", workdir,
            f"--config.data_dirs.world={b}", f"--config.pm.init_from={os.path.join(b, 'lm')}",
            *overrides)
  return workdir


def cd(size: str, steps: int = 150) -> str:
  """π0 of one size: context distillation (configs/cd.py) from ``base(size)``; its workdir."""
  b = base(size)
  workdir = os.path.join(ROOT, f"fig30_cd_{size}")
  if wd.done(workdir, "cd") is None:
    hh_main(f"configs/cd.py:size={size}", workdir, f"--config.data_dirs.world={b}",
            f"--config.cd.init_from={os.path.join(b, 'lm')}", f"--config.cd.loop.steps={steps}")
  return workdir


def result(workdir: str, stage: str = "pm") -> dict:
  """The result of the ``stage`` run in ``workdir`` (hh/workdir.py)."""
  out = wd.done(workdir, stage)
  if out is None:
    raise ValueError(f"{workdir}: no finished {stage} stage there")
  return out


def finished(workdir: str, stage: str) -> bool:
  """Whether the run in ``workdir`` has finished ``stage`` (its record, hh/workdir.py)."""
  return wd.done(workdir, stage) is not None


def load_json(path: str) -> dict:
  with open(path) as f:
    return json.load(f)


def save_json(name: str, obj: dict) -> str:
  """``obj`` as the figure folder's ``name`` (written whole or not at all, hh.io) → its path."""
  from hh import io
  path = figure_path(name)
  io.write_json(path, obj)
  return path


def world_rows(base: str, task: str) -> tuple[dict, list[dict]]:
  """The world config of the base run ``base`` and its ``task``'s training comparisons,
  regenerated from it (the same rows the PM trained on)."""
  from hh import io
  from hh.sim import dataset
  cfg = io.read_json(os.path.join(base, "config.json"))["world"]
  return cfg, dataset.generate(task, cfg)["train"]


def gold_evaluation(size: str, name: str, seed: int, trained) -> dict:
  """π0 of ``size`` and the exported policies ``trained()`` returns ({name: policy dir}) on the
  same held-out prompts of the size's base world: the online loop's evaluation record (gold
  scores, gold Elo per task relative to π0), kept as ``ROOT/name/evaluation.json`` (read back
  when there, without calling ``trained``)."""
  from configs import online as online_config
  from hh import sources
  from hh.online import loop as online_lib
  out = os.path.join(ROOT, name)
  path = os.path.join(out, "evaluation.json")
  if os.path.exists(path):
    return load_json(path)
  policies = trained()
  config = online_config.get_config(f"size={size}")
  config.data_dirs.world = base(size)
  config.seed = config.policies.seed = seed
  os.makedirs(out, exist_ok=True)
  places = sources.Places.from_config(config, out, config.data_dirs.world)
  return online_lib.evaluate_policies(config, out, places, cd(size), {}, policies)


def spread(values: list[float], within_se: list[float]) -> tuple[float, float]:
  """Mean, and the SE over seeds (several) or the one run's own SE."""
  v = np.asarray(values, np.float64)
  if len(v) > 1:
    return float(v.mean()), float(v.std(ddof=1) / np.sqrt(len(v)))
  return float(v[0]), float(within_se[0])


def pm_scaling_runs() -> dict[str, str]:
  """Fig. 7's PMs: one per size of the ladder, finetuned one epoch on the world's base
  comparisons from that size's LM (Figs. 7, 8, 9, 25 and the PMP ablation read them)."""
  return {s: pm(f"fig7_{s}", s) for s in LADDER}


def weighted_pm(size: str, lam: float) -> str:
  """A PM of ``size`` with the harmless loss weight λ (Fig. 27; λ = 1 is Fig. 1's base PM)."""
  return pm(f"fig27_{size}_w{lam:g}", size, f"--config.pm.finetune.datasets="
            f"(('hh_sim/helpful:train', 1.0), ('hh_sim/harmless:train', {float(lam)}))")


def best_of_n(pipeline: str, seed: int) -> dict:
  """The ``policies`` stage on a finished pipeline's LM, π0 and PM with sampling seed ``seed``
  (100 prompts, best-of-N for Figs. 14 and 36) → its best-of-N policies."""
  workdir = os.path.join(ROOT, f"fig36_seed{seed}")
  if wd.done(workdir, "policies") is None:
    hh_main("configs/policy.py", workdir, f"--config.policies.lm={pipeline}/lm",
            f"--config.policies.pi0={pipeline}/cd", f"--config.policies.pm={pipeline}/pm",
            f"--config.data_dirs.world={pipeline}", f"--config.policies.seed={seed}",
            "--config.policies.max_prompts=100", "--config.policies.samples=1",
            "--config.policies.best_of_prompts=100")
  return load_json(os.path.join(workdir, "best_of_n.json"))["policies"]


def online_loop(workdir: str, size: str, seed: int, pieces: dict[str, str], *overrides: str,
                pmp: bool = True, helpful_only: bool = False, controlled: bool = False) -> str:
  """``configs/online.py`` in ``workdir`` (skipped when finished) on the given ``pieces`` (lm, pm,
  pi0, static: workdirs; world: the world's folder) → its ``online`` folder."""
  if wd.done(os.path.join(REPO, workdir), "online") is None:
    hh_main(f"configs/online.py:size={size}" + ("" if pmp else ",pmp=False"), workdir,
            "--config.stages=('online',)",
            *(f"--config.online.{k}={pieces[k]}" for k in ("lm", "pm", "pi0", "static")),
            f"--config.data_dirs.world={pieces['world']}", f"--config.seed={seed}",
            f"--config.online.controlled={controlled}",
            f"--config.online.helpful_only={helpful_only}", *overrides)
  return os.path.join(REPO, workdir, "online")


def online_run(pipeline: str, root: str, size: str, seed: int, helpful_only: bool = False,
               deploy_k: int = 1) -> str:
  """One online loop on ``pipeline``'s models in ``ROOT/online[_helpful_only][_bo<K>]_seed<S>``
  (the HH loop with Fig. 16's arms; or the helpful-only loop, Fig. 35, without them; ``_bo<K>``:
  the deployed policies' responses each the best of K under the newest PM); its folder."""
  tag = ("_helpful_only" if helpful_only else "") + (f"_bo{deploy_k}" if deploy_k > 1 else "")
  p = pipeline
  pieces = {"lm": f"{p}/lm", "pm": f"{p}/pm", "pi0": f"{p}/cd", "static": f"{p}/ppo/policy",
            "world": p}
  bo = [f"--config.online.deploy_k={deploy_k}"] if deploy_k > 1 else []
  return online_loop(os.path.join(root, f"online{tag}_seed{seed}"), size, seed, pieces, *bo,
                     helpful_only=helpful_only, controlled=not helpful_only)


def define_online_flags(flags):
  """The online figures' command line (Figs. 15 and 35)."""
  flags.DEFINE_string("pipeline", "runs/pipeline", "A finished pipeline workdir, relative to the "
                      "repository or absolute, as given to the first run.")
  flags.DEFINE_string("root", "runs/fig15", "Where the loops run.")
  flags.DEFINE_string("size", "tiny", "The pipeline's size (configs/sizes.py).")
  flags.DEFINE_list("seeds", ["0"], "Seeds of the loop.")
  flags.DEFINE_integer("deploy_k", 1, "Each deployed response the best of this many samples "
                       "under the newest PM (1: plain samples, the paper's).", lower_bound=1)


def seeds(values) -> list[int]:
  """``--seeds`` as integers (one line naming a bad one)."""
  try:
    return [int(s) for s in values]
  except ValueError:
    raise ValueError(f"--seeds={','.join(values)}: expected integers, e.g. 0,1,2") from None


def scores(workdir: str) -> dict[str, np.ndarray]:
  from hh import io
  return io.read_npz(os.path.join(workdir, "eval_scores.npz"))


def curve(workdir: str, part: int, phase: str = "finetune") -> tuple[np.ndarray, np.ndarray]:
  """(pairs seen, test accuracy of test set ``part``) along one epoch."""
  from hh.train import metrics
  rows = metrics.read(os.path.join(workdir, phase), "val")
  return (np.array([r["pairs_seen"] for r in rows]),
          np.array([r[f"accuracy_{part}"] for r in rows]))


def mix_curve(workdir: str) -> tuple[np.ndarray, np.ndarray]:
  """(pairs seen, HH-mix test accuracy): the two test sets' curves weighted by their sizes."""
  x, y0 = curve(workdir, 0)
  _, y1 = curve(workdir, 1)
  n0, n1 = (t["pairs"] for t in result(workdir)["by_test_set"].values())
  return x, (n0 * y0 + n1 * y1) / (n0 + n1)


def figure_path(name: str) -> str:
  os.makedirs(os.path.join(ROOT, "figures"), exist_ok=True)
  return os.path.join(ROOT, "figures", name)


def helpful_harmless_axes():
  """(figure, [(test-set index, name, axis)] for helpful and harmless): the two-panel layout."""
  fig, ax = plt().subplots(1, 2, figsize=(10, 3.6))
  return fig, [(0, "helpful", ax[0]), (1, "harmless", ax[1])]


def plt():
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as pyplot
  return pyplot
