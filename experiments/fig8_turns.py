"""Fig. 8: histogram of Human turns in the test comparisons, and PM accuracy by turn per size.

  python experiments/fig8_turns.py      # reuses the fig. 7 runs (runs them if missing)

Expected (Bai et al. 2022, §3.2–3.4): accuracy a little higher on turn 1, roughly flat after.
"""
import numpy as np
from absl import app

from experiments import common
from hh.pm import eval as pm_eval


def main(argv):
  del argv
  workdirs = common.pm_scaling_runs()
  plt = common.plt()
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
  turns = common.scores(next(iter(workdirs.values())))["turns"]
  counts = np.bincount(np.minimum(turns, 5), minlength=6)[1:]
  a.bar(np.arange(1, 6), counts)
  a.set(xlabel="Human turns (5 = five or more)", ylabel="test comparisons",
        title="turns in the test set")
  for size, wd in workdirs.items():
    d = common.scores(wd)
    by = pm_eval.accuracy_by_turns(d["good"], d["bad"], d["turns"])
    b.plot(list(by), [v[0] for v in by.values()], "o-", label=size)
    print(size, {t: round(v[0], 3) for t, v in by.items()})
  b.set(xlabel="Human turns", ylabel="test accuracy", title="PM accuracy by turn")
  b.legend()
  fig.tight_layout()
  fig.savefig(common.figure_path("fig8_turns.png"), dpi=110)


if __name__ == "__main__":
  app.run(main)
