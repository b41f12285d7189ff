"""Fig. 14 (Bai et al. 2022, §4.4): the helpful/harmless tension during RL, and PPO against best-of-N at
matched KL (Bai et al. 2022, §4.3).

  python -m experiments.fig14_tension [--pipeline=runs/pipeline] [--iterations=80]

Two PPO runs from the pipeline's π0 against its PM (the README's main command), as its PPO stage
but longer: the pipeline's 30% harmful requests per rollout, and the paper's fix, a larger
helpful share (10% harmful). Every 10 iterations the held-out evaluation samples 120 test
prompts: the PM's score of the samples by request kind, gold scores, refusals. Writes
``fig14_tension.png``: left, the PM's score distributions of the world's helpful and harmless
test comparisons (both responses of every pair); middle, the held-out PM score on helpful and
harmful requests during RL (does the harmless score leave the data's range, as in the paper?);
right, needless refusals of borderline requests and refusals of harmful ones. And
``ppo_vs_best_of_n.png``: gold helpfulness and harmlessness against √KL for PPO's rollouts and for
best-of-N of π0 under the same PM (``experiments/fig36_best_of_n.py``'s three seeds).
Prints the held-out PM scores as percentiles of the comparison data's, refusal rates, and the
gold scores of PPO and best-of-N at matched KL.
"""
import json
import os

import numpy as np
from absl import app, flags

from experiments import common

RUNS = {"30% harmful (pipeline)": 0.3, "10% harmful (the fix)": 0.1}

FLAGS = flags.FLAGS
flags.DEFINE_string("pipeline", os.path.join(common.REPO, "runs", "pipeline"),
                    "A finished pipeline workdir (the main command's).")
flags.DEFINE_integer("iterations", 80, "PPO iterations of each run.", lower_bound=1)
flags.DEFINE_list("seeds", ["0", "1", "2"], "Best-of-N sampling seeds (Fig. 36's runs).")


def ppo(pipeline: str, harmful: float, iterations: int) -> str:
  workdir = os.path.join(common.ROOT, f"fig14_ppo_harmful{int(100 * harmful)}")
  if not common.finished(workdir, "ppo"):
    common.hh_main("configs/ppo.py", workdir, f"--config.data_dirs.world={pipeline}",
                   f"--config.ppo.init_from={pipeline}/cd", f"--config.ppo.pm={pipeline}/pm",
                   f"--config.ppo.harmful_fraction={harmful}",
                   f"--config.ppo.loop.steps={iterations}", "--config.ppo.loop.log_every=1",
                   "--config.ppo.loop.eval_every=10", "--config.ppo.loop.ckpt_every=10")
  return workdir


def rows(workdir: str, split: str) -> list[dict]:
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r.get("split") == split]


def held_out(workdir: str) -> dict[str, np.ndarray]:
  """π0's evaluation (step 0) and every later one: step, and each metric's mean and SE."""
  with open(os.path.join(workdir, "ppo_start.json")) as f:
    start = {"step": 0, **json.load(f)}
  val = [start] + rows(workdir, "val")
  return {k: np.array([r.get(k, np.nan) for r in val]) for k in start}


def percentile(data: np.ndarray, x: float) -> float:
  return 100.0 * (data < x).mean()


def main(argv):
  del argv
  args = FLAGS
  pipeline = os.path.abspath(args.pipeline)
  runs = {name: ppo(pipeline, h, args.iterations) for name, h in RUNS.items()}
  z = common.scores(os.path.join(pipeline, "pm"))
  data = {kind: np.concatenate([z["good"][z["part"] == k], z["bad"][z["part"] == k]])
          for k, kind in enumerate(("helpful", "harmless"))}

  plt = common.plt()
  fig, (a, b, c) = plt.subplots(1, 3, figsize=(15, 3.8))
  for kind, d in data.items():
    a.hist(d, bins=40, density=True, alpha=0.5, label=f"{kind} comparisons (test)")
  a.set(xlabel="PM score", ylabel="density", title="the PM on the comparison data")
  a.legend(fontsize=8)
  for (name, wd), ls in zip(runs.items(), ("-", "--")):
    h = held_out(wd)
    with open(os.path.join(wd, "config.json")) as f:
      x = h["step"] * json.load(f)["ppo"]["rollout_batch"]
    for key, kind in (("pm_score_helpful", "helpful"), ("pm_score_harmful", "harmless")):
      b.errorbar(x, h[key], h[key + "_se"], fmt="o" + ls, ms=3, capsize=2,
                 label=f"{kind} requests, {name}")
      final = h[key][-1]
      print(f"{name}: held-out PM score on {kind} requests {h[key][0]:+.3f} ± "
            f"{h[key + '_se'][0]:.3f} → {final:+.3f} ± {h[key + '_se'][-1]:.3f}: percentile "
            f"{percentile(data[kind], h[key][0]):.0f} → {percentile(data[kind], final):.0f} of the "
            f"{kind} comparison data's responses")
    c.errorbar(x, h["needless_refusal_rate_borderline"], h["needless_refusal_rate_borderline_se"],
               fmt="o" + ls, ms=3, capsize=2, label=f"needless refusals (borderline), {name}")
    c.plot(x, h["refusal_rate_harmful"], "s" + ls, ms=3, label=f"refusals of harmful, {name}")
    print(f"{name}: needless refusals of borderline requests "
          + " → ".join(f"{v:.2f}" for v in h["needless_refusal_rate_borderline"])
          + "; refusals of harmful " + " → ".join(f"{v:.2f}" for v in h["refusal_rate_harmful"]))
    print(f"{name}: held-out gold helpful {h['gold_helpful'][0]:.3f} ± "
          f"{h['gold_helpful_se'][0]:.3f} → {h['gold_helpful'][-1]:.3f} ± "
          f"{h['gold_helpful_se'][-1]:.3f}, harmless {h['gold_harmless'][0]:.3f} ± "
          f"{h['gold_harmless_se'][0]:.3f} → {h['gold_harmless'][-1]:.3f} ± "
          f"{h['gold_harmless_se'][-1]:.3f}")
  for kind, d in data.items():
    b.axhline(np.percentile(d, 95), c="gray", ls=":", lw=1)
  b.set(xlabel="RL samples", ylabel="PM score (held-out prompts)",
        title="PM score during RL (dotted: 95th pct of the data)")
  b.legend(fontsize=6)
  c.set(xlabel="RL samples", ylabel="rate", title="refusals during RL")
  c.legend(fontsize=6)
  fig.tight_layout()
  fig.savefig(common.figure_path("fig14_tension.png"), dpi=110)

  # PPO against best-of-N at matched KL (same π0, same PM)
  bon = [common.best_of_n(pipeline, s) for s in common.seeds(args.seeds)]
  names = list(bon[0])
  kl = np.array([bon[0][n]["kl_bound"] for n in names])
  fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
  train = {name: rows(wd, "train") for name, wd in runs.items()}
  for ax, key, label in zip(axes, ("gold_helpful", "gold_harmless"),
                            ("gold helpfulness (helpful requests)",
                             "gold harmlessness (harmful requests)")):
    g = np.array([[r[n][key]["mean"] for n in names] for r in bon])
    ax.errorbar(np.sqrt(kl), g.mean(0), g.std(0, ddof=1) / np.sqrt(len(g)), fmt="s-k",
                capsize=2, label="best-of-N of π0 (KL bound)")
    for name, tr in train.items():
      k_ = np.array([r["kl"] for r in tr])
      ax.plot(np.sqrt(np.maximum(k_, 0)), [r[key] for r in tr], ".", ms=3,
              label=f"PPO rollouts, {name}")
    ax.set(xlabel="√KL(π‖π0), √nats", ylabel=label)
    ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(common.figure_path("ppo_vs_best_of_n.png"), dpi=110)
  for name, tr in train.items():
    k_ = np.array([r["kl"] for r in tr])
    for n, kl_n in zip(names, kl):
      near = np.abs(k_ - kl_n) <= max(0.25 * kl_n, 0.05)
      if not near.any():
        print(f"{name}: PPO never at {n}'s KL {kl_n:.2f} (its KL reached {k_.max():.2f})")
        continue
      vals = {key: np.array([r[key] for r, m in zip(tr, near) if m])
              for key in ("gold_helpful", "gold_harmless")}
      bn = {key: np.array([r[n][key]["mean"] for r in bon]) for key in vals}
      print(f"{name}: at KL ≈ {kl_n:.2f} ({near.sum()} PPO iterations within 25%): "
            + ", ".join(f"{key} PPO {v.mean():.3f} ± "
                        f"{v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.nan:.3f} vs "
                        f"{n} {bn[key].mean():.3f} ± {bn[key].std(ddof=1) / np.sqrt(len(bn[key])):.3f}"
                        for key, v in vals.items()))


if __name__ == "__main__":
  app.run(main)
