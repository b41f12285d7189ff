"""Fig. 36: best-of-N of π0 under the HH PM — gold Elo and mean gold helpfulness against N, on
the KL axis log N − (N−1)/N (Bai et al. 2022, §4.3), with the PM's own score to show where PM and gold part.

  python -m experiments.fig36_best_of_n [--pipeline=runs/pipeline] [--seeds=0,1,2]

Uses the LM, π0 (cd) and PM of a finished pipeline workdir (the README's main command) and runs
the ``policies`` stage once per sampling seed (new samples, new annotator draws; the models are
the same, so the spread is that of sampling and judging, not of training). Writes
``fig36_best_of_n.png`` and prints means ± standard errors over the seeds.
"""
import os

import numpy as np
from absl import app, flags

from experiments import common

FLAGS = flags.FLAGS
flags.DEFINE_string("pipeline", os.path.join(common.REPO, "runs", "pipeline"),
                    "A finished pipeline workdir (the main command's).")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Sampling seeds.")


def main(argv):
  del argv
  args = FLAGS
  seeds = common.seeds(args.seeds)
  results = [common.best_of_n(os.path.abspath(args.pipeline), s) for s in seeds]
  names = list(results[0])
  kl = np.array([results[0][n]["kl_bound"] for n in names])
  pm_key = next(k for k in results[0][names[0]] if k.startswith("pm_score/"))

  def over_seeds(key, field="mean"):
    x = np.array([[r[n][key][field] for n in names] for r in results])
    return x.mean(0), x.std(0, ddof=1) / np.sqrt(len(x)) if len(x) > 1 else np.zeros(len(names))

  rows = {"gold Elo": over_seeds("gold_elo", "elo"), "gold helpfulness": over_seeds("gold_helpful"),
          "gold harmlessness": over_seeds("gold_harmless"), "PM score": over_seeds(pm_key)}
  for label, (m, se) in rows.items():
    print(f"{label:18s} " + "  ".join(f"{n}: {a:+.3f} ± {b:.3f}" for n, a, b in zip(names, m, se)))
  plt = common.plt()
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  x = np.sqrt(kl)
  for ax, label in zip(axes, ("gold Elo", "gold helpfulness", "PM score")):
    m, se = rows[label]
    ax.errorbar(x, m, se, fmt="o-")
    for xi, yi, n in zip(x, m, names):
      ax.annotate(n, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set(xlabel="√KL bound, √(log N − (N−1)/N)", ylabel=label)
  m, se = rows["gold harmlessness"]
  axes[1].errorbar(x, m, se, fmt="s--", label="gold harmlessness (harmful req.)")
  axes[1].legend(fontsize=8)
  fig.suptitle(f"Best-of-N of π0 under the HH PM ({len(seeds)} sampling seeds, mean ± SE)")
  fig.tight_layout()
  fig.savefig(common.figure_path("fig36_best_of_n.png"), dpi=110)


if __name__ == "__main__":
  app.run(main)
