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
  if not os.path.exists(os.path.join(workdir, "stages", "lm.json")):
    hh_main(f"configs/pipeline.py:size={size}", workdir, "--config.stages=('world','lm')")
  return workdir


def pm(name: str, size: str, *overrides: str, pmp: bool = False) -> str:
  """A PM run on the synthetic world from ``base(size)``; returns its workdir."""
  b = base(size)
  workdir = os.path.join(ROOT, name)
  if not os.path.exists(os.path.join(workdir, "pm_result.json")):
    hh_main(f"configs/pm.py:size={size},data=sim,pmp={pmp}", workdir,
            f"--config.data_dirs.world={b}", f"--config.pm.init_from={os.path.join(b, 'lm')}",
            *overrides)
  return workdir


def cd(size: str, steps: int = 150) -> str:
  """π0 of one size: context distillation (configs/cd.py) from ``base(size)``; its workdir."""
  b = base(size)
  workdir = os.path.join(ROOT, f"fig30_cd_{size}")
  if not os.path.exists(os.path.join(workdir, "cd_result.json")):
    hh_main(f"configs/cd.py:size={size}", workdir, f"--config.data_dirs.world={b}",
            f"--config.cd.init_from={os.path.join(b, 'lm')}", f"--config.cd.loop.steps={steps}")
  return workdir


def result(workdir: str) -> dict:
  with open(os.path.join(workdir, "pm_result.json")) as f:
    return json.load(f)


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
