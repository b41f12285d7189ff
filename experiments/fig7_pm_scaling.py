"""Fig. 7: PM test accuracy against comparisons seen (one line per size) and against size.

  python experiments/fig7_pm_scaling.py      # ~17 min on 2 CPU cores (4 base LMs + 4 PMs)

Each PM is finetuned for one epoch on the synthetic world's helpful + harmless base tranches
(6,375 pairs) from the pretrained LM of its size; with one epoch the learning curve is the
data-scaling curve (Bai et al. 2022, §3.1, App. A.2). Expected: accuracy rises with log(comparisons) and with size
over the ladder (``common.LADDER``).
"""
import numpy as np
from absl import app

from configs import sizes
from experiments import common


def n_params(size: str) -> int:
  n_layer, d, _, d_ff, _ = sizes.SIZES[size]
  return n_layer * (4 * d * d + 2 * d * d_ff + 4 * d) + 2 * d


def main(argv):
  del argv
  workdirs = common.pm_scaling_runs()
  plt = common.plt()
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
  for size, wd in workdirs.items():
    a.plot(*common.mix_curve(wd), "o-", ms=3, label=size)
  a.set(xscale="log", xlabel="comparisons seen", ylabel="test accuracy (HH mix)",
        title="PM accuracy vs data")
  a.legend()
  xs = [n_params(s) for s in workdirs]
  for key, label in ((0, "helpful"), (1, "harmless")):
    a_ = [list(common.result(wd)["by_test_set"].values())[key]["accuracy"]
          for wd in workdirs.values()]
    b.plot(xs, a_, "o-", label=label)
  mix = [common.result(wd)["accuracy"] for wd in workdirs.values()]
  b.plot(xs, mix, "o-", label="HH mix")
  b.set(xscale="log", xlabel="non-embedding parameters", ylabel="final test accuracy",
        title="PM accuracy vs size")
  b.legend()
  fig.tight_layout()
  fig.savefig(common.figure_path("fig7_pm_scaling.png"), dpi=110)
  for size, wd in workdirs.items():
    r = common.result(wd)
    print(size, f"mix {r['accuracy']:.3f}", {k: round(v["accuracy"], 3)
                                              for k, v in r["by_test_set"].items()})
  print(np.round(mix, 3))


if __name__ == "__main__":
  app.run(main)
