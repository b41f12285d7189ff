"""Fig. 30: context distillation's loss (KL(teacher ‖ student), 51-way) against steps, for each
size of the CPU ladder (Bai et al. 2022, App. A.1).

  python -m experiments.fig30_cd [--steps=150]

Each size's world + pretrained LM comes from ``common.base`` (shared with the PM figures); the
CD run starts from it with configs/cd.py. Writes ``fig30_cd.png`` and prints each size's
validation KL before and after.
"""

from absl import app, flags

from experiments import common
from hh.train import metrics

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 150, "Context-distillation steps per size.", lower_bound=1)


def main(argv):
  del argv
  args = FLAGS
  plt = common.plt()
  fig, ax = plt.subplots(figsize=(6, 4))
  for size in common.LADDER:
    wd = common.cd(size, args.steps)
    r = common.result(wd, "cd")
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
  app.run(main)
