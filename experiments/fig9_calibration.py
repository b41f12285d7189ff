"""Fig. 9: PM calibration — accuracy against |score difference| with the 1/(1+e^−Δ) line.

  python experiments/fig9_calibration.py    # HH-mix PMs (fig. 7 runs) + helpful-only PMs

Left: PMs trained on the helpful + harmless mix; right: helpful-only PMs, evaluated on the
helpful test comparisons. Expected (Bai et al. 2022, §3.2–3.4): helpful-only PMs well calibrated.
"""
import numpy as np
from absl import app

from experiments import common
from hh.pm import eval as pm_eval


def helpful_only() -> dict[str, str]:
  return {s: common.pm(f"fig9_helpful_only_{s}", s,
                       "--config.pm.finetune.datasets=(('hh_sim/helpful:train', 1.0),)")
          for s in common.LADDER}


def panel(ax, workdirs, title):
  grid = np.linspace(0, 4, 50)
  ax.plot(grid, 1 / (1 + np.exp(-grid)), "k--", label="1/(1+e^-Δ)")
  for size, wd in workdirs.items():
    d = common.scores(wd)
    sel = d["part"] == 0  # the helpful test comparisons
    cal = pm_eval.calibration(d["good"][sel], d["bad"][sel], n_bins=8, max_delta=4.0)
    ok = cal["count"] >= 10
    ax.plot(cal["centers"][ok], cal["accuracy"][ok], "o-", label=f"{size} ECE {cal['ece']:.3f}")
    print(title, size, f"ECE {cal['ece']:.3f}")
  ax.set(xlabel="|PM score difference|", ylabel="accuracy (helpful test)", title=title,
         ylim=(0.4, 1.02))
  ax.legend(fontsize=8)


def main(argv):
  del argv
  mix, helpful = common.pm_scaling_runs(), helpful_only()
  plt = common.plt()
  fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
  panel(a, mix, "HH-mix PM")
  panel(b, helpful, "helpful-only PM")
  fig.tight_layout()
  fig.savefig(common.figure_path("fig9_calibration.png"), dpi=110)


if __name__ == "__main__":
  app.run(main)
