"""The online helpful-only run on the world (Bai et al. 2022, §4.5, Fig. 35; fig1_ladder.py runs the same loop
at every size of the ladder for Fig. 1): the online loop of ``configs/online.py`` with ``config.online.helpful_only`` — helpful
prompts and helpful comparisons only, PPO without harmful prompts — against π0 and the static HH
policy, in a helpfulness panel (the annotator's helpful task on helpful and borderline prompts)
and a harmlessness panel (its red-team task on harmful ones), with the PM-predicted Elo; and
Fig. 34 during RL: each PPO run's mean log-p accuracy on the base test comparisons
(``config.ppo.logp_sets``, set by configs/online.py) against RL samples, beside the final PM's.

  python -m experiments.fig35_helpful_only [--pipeline=runs/pipeline] [--seeds=0] [--root=runs/fig15]
                                          [--deploy_k=1]

Runs on a finished pipeline's LM, PM, π0 and static policy (the README's main command) once per
seed, in ``ROOT/online_helpful_only_seed<S>`` (beside experiments/fig15_online.py's HH runs),
resuming finished steps. Prints means ± standard errors (over seeds when there are several, else
over the run's comparisons) and writes ``ROOT/fig35_helpful_only.png``.
"""
import os

import numpy as np
from absl import app, flags

from experiments import common

FLAGS = flags.FLAGS
common.define_online_flags(flags)


def val_curve(ppo_dir: str, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(RL samples seen, mean, SE) of a gold metric on held-out prompts during one PPO run: π0's
  evaluation at 0, then the "val" rows."""
  cfg = common.load_json(os.path.join(ppo_dir, "config.json"))["ppo"]
  from hh.train import metrics
  rows = metrics.read(ppo_dir, "val")
  start = common.load_json(os.path.join(ppo_dir, "ppo_start.json"))
  x = [0] + [r["step"] * cfg["rollout_batch"] for r in rows]
  return (np.array(x), np.array([start[key]] + [r[key] for r in rows]),
          np.array([start[f"{key}_se"]] + [r[f"{key}_se"] for r in rows]))


def main(argv):
  del argv
  args = FLAGS
  os.chdir(common.REPO)  # the runs' configs hold paths relative to the repository
  seeds = common.seeds(args.seeds)
  dirs = [common.online_run(args.pipeline, args.root, args.size, s, helpful_only=True,
                            deploy_k=args.deploy_k) for s in seeds]
  results = [common.result(os.path.dirname(d), "online") for d in dirs]
  n_it = len(results[0]["iterations"])
  ev = [r["evaluation"] for r in results]
  names = list(ev[0])
  print(f"\nOnline helpful-only loop, {n_it} iterations, {len(seeds)} seed(s); ± is the SE " +
        ("over seeds" if len(seeds) > 1 else "over the run's comparisons / responses"))
  for label, key in (("kept pairs", "helpful"), ("chosen", "helpful/chosen"),
                     ("sampled, ties included", "helpful/sampled")):
    if key not in results[0]["base_quality"]:  # runs made before these sets lack them
      continue
    print(f"Tranche gold helpfulness ({label}): " + ", ".join(
        "{} {:+.3f} ± {:.3f}".format(name, *common.spread([q[key]["mean"] for q in qs],
                                                    [q[key]["se"] for q in qs]))
        for name, qs in [("base", [r["base_quality"] for r in results])] +
        [(f"{i + 1}:{results[0]['iterations'][i]['kind']}",
          [r["iterations"][i]["quality"] for r in results]) for i in range(n_it)]))

  def stat(n, key, field="mean", se_field="se"):
    return common.spread([e[n][key][field] for e in ev], [e[n][key][se_field] for e in ev])

  table = {n: {"helpful_elo": stat(n, "gold_elo/helpful", "elo"),
               "harmless_elo": stat(n, "gold_elo/harmless", "elo"),
               "pm_elo": stat(n, "pm_elo/final_pm", "elo"),
               "helpful": stat(n, "gold_helpful"), "harmless": stat(n, "gold_harmless"),
               "refusals": stat(n, "refusal_rate_harmful")} for n in names}
  print("\nGold Elo relative to π0 per task (the annotator's pairwise choices), the PM-predicted "
        "Elo (174 × Δ score under the final helpful-only PM), gold means, refusal rate on harmful "
        "requests:")
  for n, t in table.items():
    print(f"  {n:10s} helpfulness Elo {t['helpful_elo'][0]:+5.0f} ± {t['helpful_elo'][1]:3.0f}  "
          f"harmlessness Elo {t['harmless_elo'][0]:+5.0f} ± {t['harmless_elo'][1]:3.0f}  "
          f"PM-predicted {t['pm_elo'][0]:+5.0f} ± {t['pm_elo'][1]:3.0f}  gold helpful "
          f"{t['helpful'][0]:+.3f} ± {t['helpful'][1]:.3f}  harmless {t['harmless'][0]:+.3f} ± "
          f"{t['harmless'][1]:.3f}  refusals {t['refusals'][0]:.2f}")

  sets = ("hh_sim/helpful:test", "hh_sim/harmless:test")
  final_pm = results[0]["iterations"][-1]["pm"]  # the final PM's accuracy per test set
  print("\nFig. 34 during RL: the policy's mean log-p accuracy on the base test comparisons "
        "(≤ 300 pairs each) at the start and end of each PPO run; the final PM's for scale:")
  for i in range(1, n_it + 1):
    ppo_dir = os.path.join(dirs[0], f"iter_{i}", "ppo")
    cells = []
    for spec in sets:
      _, m, se = val_curve(ppo_dir, f"logp_accuracy/{spec}")
      cells.append(f"{spec.split('/')[1]} {m[0]:.3f} → {m[-1]:.3f} ± {se[-1]:.3f}")
    print(f"  online_{i} (seed {seeds[0]}): " + "   ".join(cells))
  print("  final PM: " + "   ".join(f"{spec.split('/')[1]} {final_pm[spec]['accuracy']:.3f}"
                                      for spec in sets if spec in final_pm))

  plt = common.plt()
  fig, axes = plt.subplots(1, 5, figsize=(24, 3.8))
  pols = [n for n in names if n != "reference"]
  x = np.arange(len(pols))
  for ax, key, title in ((axes[0], "helpful_elo", "helpfulness (helpful prompts)"),
                         (axes[1], "harmless_elo", "harmlessness (red-team prompts)")):
    ax.errorbar(x, [table[n][key][0] for n in pols], [table[n][key][1] for n in pols], fmt="o",
                label="gold Elo")
    if key == "helpful_elo":
      ax.errorbar(x + 0.15, [table[n]["pm_elo"][0] for n in pols],
                  [table[n]["pm_elo"][1] for n in pols], fmt="s", label="PM-predicted Elo")
    if "reference" in table:
      m, s = table["reference"][key]
      ax.axhspan(m - s, m + s, color="gray", alpha=0.3, label="reference answers")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_xticks(x, pols, rotation=30, fontsize=7)
    ax.set(ylabel="Elo relative to π0", title=f"Fig. 35: {title}")
    ax.legend(fontsize=7)
  for ax, key in ((axes[2], "gold_helpful"), (axes[3], "gold_harmless")):
    for i in range(1, n_it + 1):
      s, m, se = val_curve(os.path.join(dirs[0], f"iter_{i}", "ppo"), key)
      ax.errorbar(s, m, se, label=f"helpful-only online_{i}", capsize=2)
    s, m, se = val_curve(os.path.join(common.REPO, args.pipeline, "ppo"), key)
    ax.errorbar(s, m, se, fmt="k--", label="static HH", capsize=2)
    ax.set(xlabel="RL samples", ylabel=f"{key.replace('_', ' ')} (held-out prompts)",
           title=f"PPO runs (seed {seeds[0]})")
    ax.legend(fontsize=7)
  ax = axes[4]
  for spec, style in zip(sets, ("-", "--"), strict=True):
    for i in range(1, n_it + 1):
      s, m, _ = val_curve(os.path.join(dirs[0], f"iter_{i}", "ppo"), f"logp_accuracy/{spec}")
      ax.plot(s, m, style, color=f"C{i - 1}", label=f"online_{i} {spec.split('/')[1]}")
    if spec in final_pm:
      ax.axhline(final_pm[spec]["accuracy"], ls=style, color="gray", lw=0.8)
  ax.set(xlabel="RL samples", ylabel="mean log-p accuracy", title="Fig. 34 during RL (gray: "
         "final PM)")
  ax.legend(fontsize=6)
  fig.tight_layout()
  bo = f"_bo{args.deploy_k}" if args.deploy_k > 1 else ""
  out = os.path.join(common.REPO, args.root, f"fig35_helpful_only{bo}.png")
  from hh import io
  io.write_figure(out, fig)
  print(f"\nwrote {out}")


if __name__ == "__main__":
  app.run(main)
