"""Iterated online RLHF on the world (Bai et al. 2022, §4.5): Fig. 15 (left: the final PM on the base, RS
and online test sets; right: gold and PM-predicted Elo of the online policies, and their gold
scores against RL samples), Fig. 16 (PMs of equal comparison count on base data only and on an
even base/RS/online mix, a policy on each) and Fig. 24 (final-PM scores of the world's reference
answers against the policies' samples), with Fig. 34 at its end points (the mean log-p accuracy
of π0 and of each trained policy on the final PM's held-out comparison sets, beside the PM's).

  python -m experiments.fig15_online [--pipeline=runs/pipeline] [--seeds=0] [--root=runs/fig15]
                                    [--deploy_k=1]

Runs ``configs/online.py`` on a finished pipeline's LM, PM, π0 and static PPO policy (the README's
main command) once per seed — its own rejection-sampled and online tranches, annotator draws,
PMs and policies (the pipeline's models are shared, so the spread is that of the loop, not of
pretraining) — in ``ROOT/online_seed<S>``, resuming finished steps. Paths are passed as given
(relative to the repository), so a rerun with the same arguments resumes the same runs. Prints
means ± standard errors (over seeds when there are several, else over the one run's samples) and
writes ``ROOT/fig15_online.png``. At paper sizes: ``--size`` and a pipeline of that size.
``--deploy_k=K`` deploys each policy with rejection sampling on top (every online response the
best of K samples under the newest PM) in ``ROOT/online_bo<K>_seed<S>``, ``fig15_online_bo<K>.png``.
"""
import json
import os

import numpy as np
from absl import app, flags

from experiments import common

FLAGS = flags.FLAGS
common.define_online_flags(flags)


def _kind(spec: str) -> str:
  """A test set's data kind: base (hh_sim/...), rejection-sampled or online, and its task."""
  task = "harmless" if "harmless" in spec else "helpful"
  kind = "base" if spec.startswith("hh_sim/") else spec.split("@")[0].split("-", 1)[1]
  return f"{task} {kind}"


def pm_by_kind(online_dir: str, n_it: int) -> tuple[dict, dict]:
  """The final PM's accuracy (pairs pooled over iterations) and mean-removed scores of both
  responses per test-set kind."""
  pm_dir = os.path.join(online_dir, f"iter_{n_it}", "pm")
  cfg = common.load_json(os.path.join(pm_dir, "config.json"))["pm"]
  res = common.result(os.path.dirname(pm_dir), "pm")["by_test_set"]  # the iteration records it
  z = common.scores(pm_dir)
  acc, scores = {}, {}
  for k, spec in enumerate(cfg["test_datasets"]):
    kind, sel = _kind(spec), z["part"] == k
    r = res[spec]
    a = acc.setdefault(kind, [0.0, 0])
    a[0], a[1] = a[0] + r["accuracy"] * r["pairs"], a[1] + r["pairs"]
    scores[kind] = np.concatenate([scores.get(kind, np.zeros(0)), z["good"][sel], z["bad"][sel]])
  return {k: (c / n, n) for k, (c, n) in acc.items()}, scores


def ppo_curve(ppo_dir: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """RL samples seen, gold helpfulness and harmlessness of the rollouts (train rows)."""
  cfg = common.load_json(os.path.join(ppo_dir, "config.json"))["ppo"]
  with open(os.path.join(ppo_dir, "metrics.jsonl")) as f:
    rows = [r for r in map(json.loads, f) if r.get("split") == "train" and "gold_helpful" in r]
  return (np.array([r["step"] * cfg["rollout_batch"] for r in rows]),
          np.array([r["gold_helpful"] for r in rows]), np.array([r["gold_harmless"] for r in rows]))


def logp_accuracies(online_dir: str, n_it: int, max_pairs: int = 300) -> dict:
  """Fig. 34 (Bai et al. 2022, §4.5) at RL's two ends: the mean log-p accuracy of π0, the static policy and
  each iteration's policy on the final PM's test sets (≤ ``max_pairs`` each, pooled by kind)
  → {policy: {kind: mean ± SE}}; cached in ``ONLINE_DIR/fig34.json``."""
  path = os.path.join(online_dir, "fig34.json")
  if os.path.exists(path):
    return common.load_json(path)
  import ml_collections

  from hh import io, sources
  from hh.policy import evaluate
  from hh.policy import policy as policy_lib
  from hh.ppo import train as ppo_stage
  cfg = ml_collections.ConfigDict(common.load_json(os.path.join(os.path.dirname(online_dir),
                                                     "config.json")))
  places = sources.Places.from_config(cfg, os.path.join(online_dir, "fig34"),
                                      os.path.dirname(online_dir))  # a pipeline's own world
  rows = {}
  for spec in common.load_json(os.path.join(online_dir, f"iter_{n_it}", "pm", "config.json"))["pm"][
      "test_datasets"]:
    rows.setdefault(_kind(spec), []).extend(ppo_stage.comparisons(spec, places, max_pairs))
  root = os.path.dirname(online_dir)  # inside a pipeline: its own cd and ppo stages
  static = cfg.online.static or os.path.join(root, "ppo", "policy")
  pols = {"pi0": cfg.online.pi0 or os.path.join(root, "cd"),
          "static": static if os.path.isdir(static) else None} | {
      f"online_{i}": os.path.join(online_dir, f"iter_{i}", "ppo", "policy")
      for i in range(1, n_it + 1)}
  out, mesh = {}, None
  for name, d in pols.items():
    if not d:
      continue
    pol = policy_lib.load(d, name, mesh=mesh)
    mesh = pol.mesh
    out[name] = {kind: evaluate.logp_accuracy(pol, r, 32, 64) for kind, r in rows.items()}
    print(f"  fig34: {name} " + ", ".join(f"{k} {v['mean']:.3f}" for k, v in out[name].items()),
          flush=True)
  io.write_json(path, out)
  return out


def main(argv):
  del argv
  args = FLAGS
  os.chdir(common.REPO)  # the runs' configs hold paths relative to the repository
  seeds = common.seeds(args.seeds)
  dirs = [common.online_run(args.pipeline, args.root, args.size, s, deploy_k=args.deploy_k)
          for s in seeds]
  results = [common.result(os.path.dirname(d), "online") for d in dirs]
  n_it = len(results[0]["iterations"])
  print(f"\n{len(seeds)} seed(s); ± is the SE " + ("over seeds" if len(seeds) > 1 else
                                                   "over the run's responses / comparisons"))

  print("\nTranche gold quality (kept: both responses of the kept pairs; chosen: the preferred "
        "one; sampled: every pair's responses before the annotator's unsure ties are dropped):")
  rows = [("base", [r["base_quality"] for r in results])] + [
      (f"{i + 1}: {results[0]['iterations'][i]['kind']}",
       [r["iterations"][i]["quality"] for r in results]) for i in range(n_it)]
  for task in ("helpful", "harmless"):
    for name, qs in rows:
      cells = []
      for label, key in (("kept", task), ("chosen", f"{task}/chosen"),
                         ("sampled", f"{task}/sampled")):
        if key in qs[0]:  # runs made before the chosen / sampled sets lack them
          m, se = common.spread([q[key]["mean"] for q in qs], [q[key]["se"] for q in qs])
          cells.append(f"{label} {m:+.3f} ± {se:.3f} (n={qs[0][key]['n']})")
      print(f"  {task:8s} {name:22s} " + "   ".join(cells))

  accs = [pm_by_kind(d, n_it) for d in dirs]
  print(f"\nFinal PM (iteration {n_it}) accuracy by test-set kind (pairs pooled over tranches):")
  for kind in accs[0][0]:
    m, se = common.spread([a[0][kind][0] for a in accs], [0.0])
    n = accs[0][0][kind][1]
    se = se if len(seeds) > 1 else np.sqrt(m * (1 - m) / n)
    print(f"  {kind:28s} {m:.3f} ± {se:.3f} ({n} pairs)")

  ev = [r["evaluation"] for r in results]
  names = list(ev[0])
  print("\nPolicies on held-out prompts (gold Elo: the annotator's pairwise choices; PM-predicted: "
        "174 × Δ final-PM score; both relative to π0):")

  def stat(name, key, field="mean", se_field="se"):
    return common.spread([e[name][key][field] for e in ev], [e[name][key][se_field] for e in ev])

  table = {}
  for n in names:
    t = table[n] = {"gold_elo": stat(n, "gold_elo", "elo"),
                    "helpful": stat(n, "gold_helpful"), "harmless": stat(n, "gold_harmless"),
                    "pm_final": stat(n, "pm_score/final_pm")}
    if "pm_elo/final_pm" in ev[0][n]:
      t["pm_elo"] = stat(n, "pm_elo/final_pm", "elo")
    pe = f"PM-predicted {t['pm_elo'][0]:+6.0f} ± {t['pm_elo'][1]:3.0f}" if "pm_elo" in t else ""
    for task in ("helpful", "harmless"):  # per task (runs made before it was added lack it)
      if f"gold_elo/{task}" in ev[0][n]:
        t[f"{task}_elo"] = stat(n, f"gold_elo/{task}", "elo")
        pe += f"  {task}ness Elo {t[f'{task}_elo'][0]:+5.0f} ± {t[f'{task}_elo'][1]:3.0f}"
    print(f"  {n:10s} gold Elo {t['gold_elo'][0]:+6.0f} ± {t['gold_elo'][1]:3.0f}  {pe:26s} "
          f"helpful {t['helpful'][0]:+.3f} ± {t['helpful'][1]:.3f}  harmless "
          f"{t['harmless'][0]:+.3f} ± {t['harmless'][1]:.3f}  final-PM score "
          f"{t['pm_final'][0]:+.3f} ± {t['pm_final'][1]:.3f}")
  if "mix" in table and "base_only" in table:
    d = [e["mix"]["gold_elo"]["elo"] - e["base_only"]["gold_elo"]["elo"] for e in ev]
    se = [np.hypot(e["mix"]["gold_elo"]["se"], e["base_only"]["gold_elo"]["se"]) for e in ev]
    m, s = common.spread(d, se)
    print(f"\nFig. 16: mix − base-only gold Elo = {m:+.0f} ± {s:.0f} "
          f"({'mix ahead' if m - 2 * s > 0 else 'base-only ahead' if m + 2 * s < 0 else 'no difference'}"
          " at 2 SE); equal comparison counts per arm: " +
          ", ".join(f"{a} {results[0]['controlled'][a]['pairs']}" for a in ("base", "mix")))

  lp = [logp_accuracies(d, n_it) for d in dirs]
  print("\nFig. 34: mean log-p accuracy (the better response's mean per-token log-prob the higher)"
        " before RL (π0) and after it, by test-set kind; the final PM's accuracy for scale:")
  kinds = list(lp[0]["pi0"])
  for n in lp[0]:
    print(f"  {n:10s} " + "  ".join(
        "{} {:.3f} ± {:.3f}".format(k, *common.spread([x[n][k]["mean"] for x in lp],
                                                [x[n][k]["se"] for x in lp])) for k in kinds))
  print("  final PM   " + "  ".join(f"{k} {np.mean([a[0][k][0] for a in accs]):.3f}"
                                     for k in kinds))

  plt = common.plt()
  fig, axes = plt.subplots(1, 5, figsize=(23, 3.8))
  ax = axes[0]
  for kind in [k for k in accs[0][1] if k.startswith("helpful")]:
    s = np.concatenate([a[1][kind] for a in accs])
    ax.hist(s, bins=30, density=True, histtype="step", label=f"{kind} (acc {accs[0][0][kind][0]:.2f})")
  ax.set(xlabel="final-PM score (mean removed)", ylabel="density",
         title="Fig. 15 left: helpful test sets")
  ax.legend(fontsize=7)
  ax = axes[1]
  pols = [n for n in names if n != "reference"]
  x = np.arange(len(pols))
  ax.errorbar(x - 0.1, [table[n]["gold_elo"][0] for n in pols],
              [table[n]["gold_elo"][1] for n in pols], fmt="o", label="gold Elo")
  if all("pm_elo" in table[n] for n in pols):
    ax.errorbar(x + 0.1, [table[n]["pm_elo"][0] for n in pols],
                [table[n]["pm_elo"][1] for n in pols], fmt="s", label="PM-predicted Elo")
  ax.set_xticks(x, pols, rotation=30, fontsize=7)
  ax.set(ylabel="Elo relative to π0", title="Fig. 15 right / Fig. 16")
  ax.axhline(0, color="gray", lw=0.5)
  ax.legend(fontsize=7)
  ax = axes[2]
  for i in range(1, n_it + 1):
    s, h, _ = ppo_curve(os.path.join(dirs[0], f"iter_{i}", "ppo"))
    ax.plot(s, h, label=f"online_{i}")
  s, h, _ = ppo_curve(os.path.join(common.REPO, args.pipeline, "ppo"))
  ax.plot(s, h, "k--", label="static")
  ax.set(xlabel="RL samples", ylabel="gold helpfulness of rollouts", title="PPO runs (seed "
         f"{seeds[0]})")
  ax.legend(fontsize=7)
  ax = axes[3]
  x = np.arange(len(names))
  ax.bar(x, [table[n]["pm_final"][0] for n in names], yerr=[table[n]["pm_final"][1] for n in names])
  ax.set_xticks(x, names, rotation=30, fontsize=7)
  ax.set(ylabel="final-PM score", title="Fig. 24: reference answers vs policies")
  ax = axes[4]
  pols = list(lp[0])
  for j, k in enumerate(kinds):
    m = [np.mean([x[n][k]["mean"] for x in lp]) for n in pols]
    line, = ax.plot(range(len(pols)), m, "o-", label=k)
    ax.axhline(np.mean([a[0][k][0] for a in accs]), ls="--", color=line.get_color(), lw=0.8)
  ax.set_xticks(range(len(pols)), pols, rotation=30, fontsize=7)
  ax.set(ylabel="mean log-p accuracy", title="Fig. 34 at RL's ends (dashed: final PM)")
  ax.legend(fontsize=6)
  fig.tight_layout()
  bo = f"_bo{args.deploy_k}" if args.deploy_k > 1 else ""
  out = os.path.join(common.REPO, args.root, f"fig15_online{bo}.png")
  from hh import io
  io.write_figure(out, fig)
  print(f"\nwrote {out}")


if __name__ == "__main__":
  app.run(main)
