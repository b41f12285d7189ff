"""Fig. 25: PM accuracy on pairs whose two (mean-removed) scores both exceed a threshold.

  python experiments/fig25_threshold.py    # reuses the fig. 7 runs

Expected (Bai et al. 2022, §3.2–3.4): accuracy falls as the threshold rises, for helpful and harmless.
"""
import numpy as np
from absl import app

from experiments import common
from hh.pm import eval as pm_eval


def main(argv):
  del argv
  workdirs = common.pm_scaling_runs()
  fig, panels = common.helpful_harmless_axes()
  for size, wd in workdirs.items():
    d = common.scores(wd)
    for part, name, axis in panels:
      sel = d["part"] == part
      good, bad = d["good"][sel], d["bad"][sel]
      grid = np.quantile(np.minimum(good, bad), np.linspace(0, 0.9, 10))
      rows = [r for r in pm_eval.threshold_accuracy(good, bad, grid) if r[2] >= 15]
      axis.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label=size)
      print(size, name, [(round(t, 2), round(a, 3), n) for t, a, n in rows])
  for _, name, axis in panels:
    axis.set(xlabel="lower score threshold (both responses above)", ylabel="accuracy",
             title=name)
    axis.legend()
  fig.tight_layout()
  fig.savefig(common.figure_path("fig25_threshold.png"), dpi=110)


if __name__ == "__main__":
  app.run(main)
