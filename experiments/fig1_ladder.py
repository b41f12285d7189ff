"""Fig. 1 (Bai et al. 2022, §4.4, §4.5): gold Elo against model size — π0 (context-distilled), static HH
RLHF, online HH RLHF and online helpful-only RLHF — in a helpfulness panel (the annotator's
helpful task on helpful requests) and a harmlessness panel (its red-team task on harmful ones),
relative to the largest π0, with the world's reference answers ("professional writers") as a band.

  python -m experiments.fig1_ladder [--seed=0] [--sizes=micro,mini,tiny]

Every series at every size of the ladder, from the same pieces of that size: π0 is
``common.cd(size)``; the base PM is a PM of its size finetuned on all the world's static
comparisons (Fig. 27's λ = 1 PM: no PMP); the static HH RLHF policy is PPO (configs/ppo.py's
defaults, 50 iterations) from π0 against that PM; the online HH and online helpful-only policies
are the last iteration of ``configs/online.py`` run on that LM, base PM and π0 (3 iterations:
a rejection-sampled tranche, then two online ones; each iteration's PM from the LM without PMP
on base + all tranches, as the base PM was made, and its policy PPO from π0 with the static
policy's, 50 iterations on the CPU ladder). All policies answer the same 120 held-out prompts × 4 samples
(``hh.online.loop.evaluate_policies``); the annotator compares every pair on every row and
``hh/elo.py`` fits Elo per task. ``--seed`` seeds the online loops and the evaluation. Writes
``fig1_ladder[_seed<S>].png`` (seed 0 without the suffix) and
``fig1_ladder_seed<S>/evaluation.json`` and prints each policy's per-task Elo ± SE. At paper
sizes: ``--sizes=13M,42M,...`` (each run's config is its size's: configs/ppo.py, online.py).
"""
import os

from absl import app, flags

from configs import ppo, sizes
from experiments import common

SIZES = ("micro", "mini", "tiny")  # the CPU ladder; --sizes for another

FLAGS = flags.FLAGS
flags.DEFINE_integer("seed", 0, "Seed of the online loops and the evaluation.")
flags.DEFINE_list("sizes", list(SIZES), "The ladder, smallest first (configs/sizes.py).")


def static(size: str) -> str:
  """PPO of the ``size`` π0 against the full-data PM of its size; the exported policy."""
  workdir = os.path.join(common.ROOT, f"fig1_static_{size}")
  if not common.finished(workdir, "ppo"):
    common.hh_main(f"configs/ppo.py:size={size}", workdir,
                   f"--config.data_dirs.world={common.base(size)}",
                   f"--config.ppo.init_from={common.cd(size)}",
                   f"--config.ppo.pm={common.weighted_pm(size, 1)}")
  return os.path.join(workdir, "policy")


def online(size: str, seed: int, helpful_only: bool = False) -> str:
  """The online HH (or helpful-only) loop of ``size`` on the static series' LM, base PM and π0
  (``configs/online.py`` without PMP or Fig. 16's arms, PPO as long as the static policy's);
  the exported policy of its last iteration."""
  b, tag = common.base(size), "_helpful_only" if helpful_only else ""
  steps = ppo.stage(size).loop.steps  # the static policy's (configs/ppo.py)
  pieces = {"lm": os.path.join(b, "lm"), "pm": common.weighted_pm(size, 1),
            "pi0": common.cd(size), "static": static(size), "world": b}
  out = common.online_loop(os.path.join(common.ROOT, f"fig1_online{tag}_{size}_seed{seed}"), size,
                          seed, pieces, f"--config.ppo.loop.steps={steps}",
                          f"--config.ppo.loop.eval_every={steps}", "--config.ppo.logp_sets=()",
                          pmp=False, helpful_only=helpful_only)
  n_it = len(common.result(os.path.dirname(out), "online")["iterations"])
  return os.path.join(out, f"iter_{n_it}", "ppo", "policy")


def evaluation(seed: int, ladder: tuple[str, ...] = SIZES) -> dict:
  def trained():
    policies = {}
    for s in ladder:
      if s != ladder[-1]:
        policies[f"pi0 {s}"] = common.cd(s)
      policies[f"static {s}"] = static(s)
      policies[f"online {s}"] = online(s, seed)
      policies[f"online helpful-only {s}"] = online(s, seed, helpful_only=True)
    return policies
  return common.gold_evaluation(ladder[-1], _name(ladder, seed), seed, trained)


def _name(ladder: tuple[str, ...], seed: int) -> str:
  return "fig1_ladder" + ("" if ladder == SIZES else "_" + "-".join(ladder)) + f"_seed{seed}"


def main(argv):
  del argv
  args = FLAGS
  ladder = tuple(args.sizes)
  for s in ladder:
    if s not in sizes.SIZES:
      raise app.UsageError(f"--sizes: unknown size {s!r}; allowed: {', '.join(sizes.SIZES)}")
  pol = evaluation(args.seed, ladder)["policies"]
  x = {s: sizes.SIZES[s][4] for s in ladder}
  plt = common.plt()
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  series = {"context-distilled (π0)": "pi0", "static HH RLHF": "static", "online HH RLHF":
            "online", "online helpful-only RLHF": "online helpful-only"}
  for ax, task in zip(axes, ("helpful", "harmless")):
    key = f"gold_elo/{task}"
    for label, prefix in series.items():
      names = {s: "pi0" if (prefix == "pi0" and s == ladder[-1]) else f"{prefix} {s}"
               for s in ladder}
      pts = [(x[s], pol[n][key]) for s, n in names.items() if n in pol]
      ax.errorbar([p[0] for p in pts], [p[1]["elo"] for p in pts], [p[1]["se"] for p in pts],
                  fmt="o-", capsize=2, label=label)
    w = pol["reference"][key]
    ax.axhspan(w["elo"] - w["se"], w["elo"] + w["se"], color="gray", alpha=0.3,
               label="reference answers (writers)")
    ax.set(xscale="log", xlabel="non-embedding parameters",
           ylabel=f"{task}ness Elo vs π0 {ladder[-1]}", title=f"{task}ness (gold annotator)")
    ax.legend(fontsize=7)
  fig.tight_layout()
  name = _name(ladder, args.seed).removesuffix("_seed0")
  fig.savefig(common.figure_path(f"{name}.png"), dpi=110)
  for n, p in pol.items():
    print(f"{n:26s} " + "  ".join(f"{k.split('/')[1]} {p[k]['elo']:+.0f} ± {p[k]['se']:.0f}"
                                   for k in ("gold_elo/helpful", "gold_elo/harmless"))
          + f"  gold helpful {p['gold_helpful']['mean']:.3f}, harmless "
            f"{p['gold_harmless']['mean']:.3f}")


if __name__ == "__main__":
  app.run(main)
