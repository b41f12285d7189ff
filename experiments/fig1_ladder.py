"""Fig. 1 (SPEC §4.4, §4.5): gold Elo against model size — π0 (context-distilled), static HH
RLHF, online HH RLHF and online helpful-only RLHF — in a helpfulness panel (the annotator's
helpful task on helpful requests) and a harmlessness panel (its red-team task on harmful ones),
relative to the largest π0, with the world's reference answers ("professional writers") as a band.

  python -m experiments.fig1_ladder [--root=runs/fig15] [--seed=0]

Per size of the ladder: π0 is ``common.cd(size)``; the static HH RLHF policy is PPO
(configs/ppo.py's defaults, 50 iterations) from it against a PM of its size finetuned on all the
world's static comparisons (Fig. 27's λ = 1 PM: no PMP). The online policies exist at tiny only:
the last iteration of ``experiments/fig15_online.py`` and ``fig35_helpful_only.py`` runs in
``--root`` (their static policy is the main command's PPO, on a PM with PMP). All policies answer
the same 120 held-out prompts × 4 samples (``hh.rl.online.evaluate_policies``); the annotator
compares every pair on every row and ``hh/elo.py`` fits Elo per task. Writes ``fig1_ladder.png``
and ``fig1_ladder/evaluation.json`` and prints each policy's per-task Elo ± SE.
"""
import argparse
import json
import os

from configs import sizes
from experiments import common, fig27_harmless_weight

SIZES = ("micro", "mini", "tiny")


def static(size: str) -> str:
  """PPO of the ``size`` π0 against the full-data PM of its size; the exported policy."""
  workdir = os.path.join(common.ROOT, f"fig1_static_{size}")
  if not os.path.exists(os.path.join(workdir, "ppo_result.json")):
    common.hh_main(f"configs/ppo.py:size={size}", workdir,
                   f"--config.data_dirs.world={common.base(size)}",
                   f"--config.ppo.init_from={common.cd(size)}",
                   f"--config.ppo.pm={fig27_harmless_weight.run(size, 1)}")
  return os.path.join(workdir, "policy")


def evaluation(root: str, seed: int) -> dict:
  from configs import online as online_config
  from hh.data import sources
  from hh.rl import online
  out = os.path.join(common.ROOT, "fig1_ladder")
  path = os.path.join(out, "evaluation.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  trained = {}
  for s in SIZES:
    if s != SIZES[-1]:
      trained[f"pi0 {s}"] = common.cd(s)
    trained[f"static {s}"] = static(s)
  for name, run in (("online", "online_seed"), ("online helpful-only", "online_helpful_only_seed")):
    p = os.path.join(common.REPO, root, f"{run}{seed}", "online")
    its = sorted(int(d.split("_")[1]) for d in os.listdir(p) if d.startswith("iter_"))
    trained[f"{name} {SIZES[-1]}"] = os.path.join(p, f"iter_{its[-1]}", "ppo", "policy")
  config = online_config.get_config(f"size={SIZES[-1]}")
  config.data_dirs.world = common.base(SIZES[-1])
  config.seed = config.policies.seed = seed
  os.makedirs(out, exist_ok=True)
  places = sources.Places.from_config(config, out, config.data_dirs.world)
  return online.evaluate_policies(config, out, places, common.cd(SIZES[-1]), {}, trained)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--root", default=os.path.join("runs", "fig15"),
                  help="where fig15_online.py and fig35_helpful_only.py ran")
  ap.add_argument("--seed", type=int, default=0)
  args = ap.parse_args()
  pol = evaluation(args.root, args.seed)["policies"]
  x = {s: sizes.SIZES[s][4] for s in SIZES}
  plt = common.plt()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  series = {"context-distilled (π0)": "pi0", "static HH RLHF": "static", "online HH RLHF":
            "online", "online helpful-only RLHF": "online helpful-only"}
  for ax, task in zip(axes, ("helpful", "harmless")):
    key = f"gold_elo/{task}"
    for label, prefix in series.items():
      names = {s: "pi0" if (prefix == "pi0" and s == SIZES[-1]) else f"{prefix} {s}"
               for s in SIZES}
      pts = [(x[s], pol[n][key]) for s, n in names.items() if n in pol]
      ax.errorbar([p[0] for p in pts], [p[1]["elo"] for p in pts], [p[1]["se"] for p in pts],
                  fmt="o-", capsize=2, label=label)
    w = pol["reference"][key]
    ax.axhspan(w["elo"] - w["se"], w["elo"] + w["se"], color="gray", alpha=0.3,
               label="reference answers (writers)")
    ax.set(xscale="log", xlabel="non-embedding parameters",
           ylabel=f"{task}ness Elo vs π0 {SIZES[-1]}", title=f"{task}ness (gold annotator)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(common.figure_path("fig1_ladder.png"), dpi=110)
  for n, p in pol.items():
    print(f"{n:26s} " + "  ".join(f"{k.split('/')[1]} {p[k]['elo']:+.0f} ± {p[k]['se']:.0f}"
                                   for k in ("gold_elo/helpful", "gold_elo/harmless"))
          + f"  gold helpful {p['gold_helpful']['mean']:.3f}, harmless "
            f"{p['gold_harmless']['mean']:.3f}")


if __name__ == "__main__":
  main()
