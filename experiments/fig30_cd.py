"""Fig. 30: context distillation's loss (KL(teacher ‖ student), 51-way) against steps, for each
size of the CPU ladder (SPEC §4.6).

  python -m experiments.fig30_cd [--steps=150]

Each size's world + pretrained LM comes from ``common.base`` (shared with the PM figures); the
CD run starts from it with configs/cd.py. Writes ``fig30_cd.png`` and prints each size's
validation KL before and after.
"""
import argparse
import json
import os

from experiments import common
from hh.train import metrics


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--steps", type=int, default=150)
  args = ap.parse_args()
  plt = common.plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  for size in common.LADDER:
    wd = common.cd(size, args.steps)
    with open(os.path.join(wd, "cd_result.json")) as f:
      r = json.load(f)
    val = metrics.read(wd, "val")
    ax.plot([0] + [v["step"] for v in val], [r["val_kl_start"]] + [v["loss"] for v in val],
            "o-", label=size)
    print(f"{size}: validation KL {r['val_kl_start']:.4f} → {r['val_kl']:.4f} nats/token")
  ax.set(xlabel="step", ylabel="validation KL(teacher ‖ student), nats/token", yscale="log",
         title="Context distillation (Fig. 30)")
  ax.legend()
  fig.tight_layout()
  fig.savefig(common.figure_path("fig30_cd.png"), dpi=110)


if __name__ == "__main__":
  main()
