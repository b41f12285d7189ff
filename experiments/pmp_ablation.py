"""PMP ablation: finetuning accuracy against comparisons seen, with and without PMP.

  python experiments/pmp_ablation.py    # one tiny PM with PMP (+ fig. 7's tiny PM), ~4 min

With PMP the PM is first trained one epoch on the world's binarized PMP pairs (Askell et al. 2021, PMP).
Expected: PMP helps most when comparisons are few.
"""
from absl import app

from experiments import common

SIZE = "tiny"


def main(argv):
  del argv
  runs = {"with PMP": common.pm(f"pmp_{SIZE}_on", SIZE, pmp=True),
          "without PMP": common.pm_scaling_runs()[SIZE]}  # the same run without PMP
  fig, axes = common.plt().subplots(1, 3, figsize=(15, 3.6))
  panels = [(0, "helpful", axes[0]), (1, "harmless", axes[1]), (None, "HH mix", axes[2])]
  for label, wd in runs.items():
    for part, name, axis in panels:
      x, y = common.mix_curve(wd) if part is None else common.curve(wd, part)
      axis.plot(x, y, "o-", ms=3, label=label)
      print(label, name, list(zip(x.astype(int).tolist(), y.round(3).tolist())))
  for _, name, axis in panels:
    axis.set(xscale="log", xlabel="finetuning comparisons seen", ylabel=f"{name} test accuracy",
             title=f"PMP ablation ({SIZE})")
    axis.legend()
  fig.tight_layout()
  fig.savefig(common.figure_path("pmp_ablation.png"), dpi=110)


if __name__ == "__main__":
  app.run(main)
