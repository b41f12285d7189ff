"""Fig. 27: helpful, harmless and mean test accuracy against the harmless loss weight λ in
L = L_helpful + λ·L_harmless (Bai et al. 2022, §3.1, App. A.2), one line per size.

  python -m experiments.fig27_harmless_weight      # 5 weights × 3 sizes, ~20 min on 2 CPU cores

Each PM is finetuned for one epoch on the world's helpful + harmless base tranches from the
pretrained LM of its size (``common.base``, no PMP), with ``configs/pm.py:harmless_weight=λ``.
The paper: λ = 2–3 gives the best mean accuracy; raising λ from 1 to 10 costs 7.4 points of
helpful accuracy at 13M and 1.5 at 52B. Prints each size's accuracies per λ with their binomial
standard errors and writes ``fig27_harmless_weight.png``.
"""
import numpy as np
from absl import app

from experiments import common

WEIGHTS = (1, 2, 3, 4, 10)
SIZES = ("micro", "mini", "tiny")


def accuracies(workdir: str) -> tuple[float, float, int, int]:
  """(helpful accuracy, harmless accuracy, helpful pairs, harmless pairs)."""
  (h, r) = list(common.result(workdir)["by_test_set"].values())
  return h["accuracy"], r["accuracy"], h["pairs"], r["pairs"]


def paired_change(before: str, after: str, part: int) -> tuple[float, float]:
  """Change in accuracy on test set ``part`` between two PMs, and its SE paired over pairs."""
  a, b = (common.scores(w) for w in (before, after))
  ca, cb = ((z["good"] > z["bad"])[z["part"] == part].astype(float) for z in (a, b))
  d = cb - ca
  return d.mean(), d.std(ddof=1) / np.sqrt(len(d))


def main(argv):
  del argv
  plt = common.plt()
  fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
  for size in SIZES:
    acc = np.array([accuracies(common.weighted_pm(size, lam)) for lam in WEIGHTS])
    helpful, harmless, n_h, n_r = acc.T
    se_h, se_r = np.sqrt(helpful * (1 - helpful) / n_h), np.sqrt(harmless * (1 - harmless) / n_r)
    mean = (helpful + harmless) / 2
    for ax, y, se in zip(axes, (helpful, harmless, mean),
                         (se_h, se_r, np.sqrt(se_h ** 2 + se_r ** 2) / 2)):
      ax.errorbar(WEIGHTS, y, se, fmt="o-", ms=3, capsize=2, label=size)
    print(size, "  ".join(f"λ={lam:g}: helpful {a:.3f} ± {sa:.3f}, harmless {b:.3f} ± {sb:.3f}, "
                          f"mean {m:.3f}" for lam, a, sa, b, sb, m
                          in zip(WEIGHTS, helpful, se_h, harmless, se_r, mean)))
    d, se_d = paired_change(common.weighted_pm(size, WEIGHTS[0]), common.weighted_pm(size, WEIGHTS[-1]), 0)
    e, se_e = paired_change(common.weighted_pm(size, WEIGHTS[0]), common.weighted_pm(size, WEIGHTS[-1]), 1)
    print(f"{size}: λ {WEIGHTS[0]} → {WEIGHTS[-1]} changes helpful accuracy by {d:+.3f} ± "
          f"{se_d:.3f} and harmless by {e:+.3f} ± {se_e:.3f} (paired over the same test pairs); "
          f"best mean at λ = {WEIGHTS[int(mean.argmax())]}")
  for ax, name in zip(axes, ("helpful test set", "harmless test set", "mean of the two")):
    ax.set(xscale="log", xticks=WEIGHTS, xticklabels=[str(w) for w in WEIGHTS],
           xlabel="harmless loss weight λ", ylabel="test accuracy", title=name)
    ax.legend()
  fig.suptitle("PM accuracy against the harmless loss weight (Fig. 27; binomial SE)")
  fig.tight_layout()
  fig.savefig(common.figure_path("fig27_harmless_weight.png"), dpi=110)


if __name__ == "__main__":
  app.run(main)
