"""Label quality: what unreliable labellers, several labels per pair and their aggregation do to
the labels and to the PM trained on them.

  python -m experiments.labelling_quality [--size=nano] [--seeds=0,1,2] [--pms=True]

The world's helpful training comparisons (both responses of each, A and B in a random order) are
labelled afresh by a pool of ten simulated labellers of whom a share ``noise`` is unreliable
(noisy, length-biased, careless, adversarial in turn: hh/sim/labellers.py), k per pair, and
aggregated by majority, Dawid–Skene or a noisy Bradley–Terry with per-labeller reliability
(hh/agreement.py); ties of the majority are dropped like "unsure" answers. Measured per seed:
the agreement of the pool (Fleiss' κ, Krippendorff's α), the aggregated labels' accuracy against
the gold-better response, and — with ``--pms`` — the test accuracy of a PM finetuned on them from
the size's LM (one epoch, no PMP) on the world's annotator-labelled helpful test set, against
that set's Bayes ceiling. Mean ± SE over seeds; figure and table under ``$HH_EXPERIMENTS``.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from experiments import common

flags.DEFINE_string("size", "nano", "Model size of the LM the PMs start from.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the labelling (and of the PMs).")
flags.DEFINE_list("noise", ["0", "0.3", "0.6"], "Shares of unreliable labellers in the pool.")
flags.DEFINE_list("k", ["1", "3", "5"], "Labels per pair.")
flags.DEFINE_bool("pms", True, "Train a PM on each labelling (else the labels only).")
FLAGS = flags.FLAGS


def comparisons(base: str) -> dict[str, np.ndarray | list]:
  """The base world's helpful training comparisons, A/B in a fixed random order."""
  cfg, rows = common.world_rows(base, "helpful")
  swap = np.random.default_rng([cfg["seed"], 5]).random(len(rows)) < 0.5
  pick = lambda r, s, first: r["rejected" if s == first else "chosen"].strip()  # noqa: E731
  out = {"context": [r["context_text"] for r in rows],
         "a": [pick(r, s, True) for r, s in zip(rows, swap)],
         "b": [pick(r, s, False) for r, s in zip(rows, swap)],
         "temperature": float(cfg["temperature"])}
  gold = np.array([[r["chosen_helpful"], r["rejected_helpful"]] for r in rows])
  out["s_a"] = np.where(swap, gold[:, 1], gold[:, 0])
  out["s_b"] = np.where(swap, gold[:, 0], gold[:, 1])
  return out


def labelling(c: dict, noise: float, k: int, seed: int) -> dict:
  """One labelling of every comparison → its matrix, agreement and each aggregation's labels."""
  from hh import agreement as ag
  from hh.sim import labellers
  rng = np.random.default_rng([seed, int(noise * 100), k])
  len_a, len_b = (np.array([len(t) for t in c[x]]) for x in ("a", "b"))
  m = labellers.label_matrix(labellers.pool(noise), k, c["s_a"], c["s_b"], len_a, len_b,
                             c["temperature"], rng)
  out = {"alpha": ag.krippendorff_alpha(m) if k > 1 else float("nan"),
         "fleiss": ag.fleiss_kappa(m) if k > 1 else float("nan"), "labels": {}}
  decided = c["s_a"] != c["s_b"]
  for name, fn in ag.AGGREGATIONS.items():
    if k == 1 and name != "majority":
      continue  # with one label per pair the aggregations are that label
    p = fn(m)
    kept = p != 0.5
    right = (p > 0.5) == (c["s_a"] > c["s_b"])
    out["labels"][name] = {"a_preferred": p > 0.5, "kept": kept,
                           "accuracy": float(right[kept & decided].mean()),
                           "kept_share": float(kept.mean())}
  return out


def train_pm(c: dict, name: str, labels: dict, size: str, seed: int) -> dict:
  """A PM of ``size`` finetuned on one labelling (an hh-rlhf tranche) → its helpful test result."""
  from hh.online import tranche
  d = os.path.join(common.ROOT, "labelling", name)
  if not os.path.exists(os.path.join(d, "helpful-online", "train.jsonl.gz")):
    pairs = [tranche.Pair(str(i), ctx, "helpful", a, b)
             for i, (ctx, a, b) in enumerate(zip(c["context"], c["a"], c["b"]))]
    tranche.write(d, "online", "train", pairs,
                  tranche.Labels(labels["a_preferred"], labels["kept"]))
  work = common.pm(f"labelling_pm_{name}", size,
                   f"--config.pm.finetune.datasets=(('hh_rlhf/helpful-online@{d}:train', 1.0),)",
                   "--config.pm.test_datasets=('hh_sim/helpful:test',)",
                   f"--config.seed={seed}")
  return common.result(work)["by_test_set"]["hh_sim/helpful:test"]


def main(argv):
  del argv
  seeds = common.seeds(FLAGS.seeds)
  noises, ks = [float(x) for x in FLAGS.noise], [int(x) for x in FLAGS.k]
  c = comparisons(common.base(FLAGS.size))
  rows, ceiling = [], None
  for noise in noises:
    for k in ks:
      runs = {}
      for seed in seeds:
        lab = labelling(c, noise, k, seed)
        for agg, labels in lab["labels"].items():
          r = runs.setdefault(agg, {"label_acc": [], "pm_acc": [], "alpha": [], "fleiss": []})
          r["label_acc"].append(labels["accuracy"])
          r["alpha"].append(lab["alpha"])
          r["fleiss"].append(lab["fleiss"])
          if FLAGS.pms:
            res = train_pm(c, f"{FLAGS.size}_n{int(noise * 100)}_k{k}_{agg}_s{seed}", labels,
                           FLAGS.size, seed)
            r["pm_acc"].append(res["accuracy"])
            ceiling = res["bayes_ceiling"]
      for agg, r in runs.items():
        row = {"noise": noise, "k": k, "aggregation": agg, "seeds": len(seeds)}
        for key, v in r.items():
          if v and not np.isnan(v).any():
            row[key] = common.spread(v, [0.0])
        rows.append(row)
        print(json.dumps(row), flush=True)
  out = {"size": FLAGS.size, "pairs": len(c["a"]), "bayes_ceiling": ceiling, "rows": rows}
  common.save_json("labelling_quality.json", out)
  plot(out)


def plot(out: dict):
  plt = common.plt()
  keys = [("label_acc", "aggregated labels' accuracy\nagainst the gold-better response")]
  if any("pm_acc" in r for r in out["rows"]):
    keys.append(("pm_acc", "PM test accuracy (helpful,\nannotator labels)"))
  fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 3.8), squeeze=False)
  styles = {"majority": "o-", "dawid_skene": "s--", "noisy_bt": "^:"}
  for ax, (key, label) in zip(axes[0], keys):
    lines = sorted({(r["k"], r["aggregation"]) for r in out["rows"]})
    for k, agg in lines:
      rs = [r for r in out["rows"] if r["k"] == k and r["aggregation"] == agg and key in r]
      ax.errorbar([100 * r["noise"] for r in rs], [r[key][0] for r in rs],
                  yerr=[r[key][1] for r in rs], fmt=styles[agg], capsize=3,
                  label=f"k={k} {agg}" if k > 1 else "k=1")
    if key == "pm_acc" and out["bayes_ceiling"]:
      ax.axhline(out["bayes_ceiling"], c="gray", ls=":", label="Bayes ceiling")
    ax.set(xlabel="% unreliable labellers in the pool", ylabel=label)
  axes[0][-1].legend(fontsize=7)
  fig.suptitle(f"{out['pairs']} helpful comparisons relabelled; {out['size']} PMs; "
               f"mean ± SE over {out['rows'][0]['seeds']} seeds", fontsize=9)
  fig.tight_layout()
  fig.savefig(common.figure_path("labelling_quality.png"), dpi=110)


if __name__ == "__main__":
  app.run(main)
