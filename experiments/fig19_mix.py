"""Fig. 19: helpful and harmless test accuracy against the harmless share of the training mix.

  python experiments/fig19_mix.py      # 5 shares × 2 sizes, ~12 min on 2 CPU cores

1,800 training comparisons in all, a share f from the harmless (red-team) tranche and 1 − f
from the helpful one. Expected (Bai et al. 2022, §3.2–3.4): a helpful-only PM (f = 0) scores below chance on
harmless comparisons and a harmless-only PM (f = 1) below chance on helpful ones.
"""
from absl import app

from experiments import common

SHARES = (0.0, 0.25, 0.5, 0.75, 1.0)
SIZES = ("mini", "tiny")
TOTAL = 1800


def run(size: str, share: float) -> str:
  n_harm = int(round(TOTAL * share))
  sets = []
  if n_harm < TOTAL:
    sets.append(f"('hh_sim/helpful:train[:{TOTAL - n_harm}]', 1.0)")
  if n_harm:
    sets.append(f"('hh_sim/harmless:train[:{n_harm}]', 1.0)")
  return common.pm(f"fig19_{size}_{int(share * 100)}", size,
                   f"--config.pm.finetune.datasets=({','.join(sets)},)")


def main(argv):
  del argv
  fig, panels = common.helpful_harmless_axes()
  for size in SIZES:
    accs = [list(common.result(run(size, f))["by_test_set"].values()) for f in SHARES]
    for k, name, axis in panels:
      axis.plot([100 * f for f in SHARES], [a[k]["accuracy"] for a in accs], "o-", label=size)
      print(size, name, [round(a[k]["accuracy"], 3) for a in accs])
  for _, name, axis in panels:
    axis.axhline(0.5, c="gray", ls=":")
    axis.set(xlabel="% harmless comparisons in training", ylabel=f"{name} test accuracy",
             title=f"{name} test set")
    axis.legend()
  fig.tight_layout()
  fig.savefig(common.figure_path("fig19_mix.png"), dpi=110)


if __name__ == "__main__":
  app.run(main)
