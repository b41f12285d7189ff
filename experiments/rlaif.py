"""AI feedback beside human feedback (RLAIF) on the world: a PM trained on a small annotator-labelled
seed set labels the rest of the comparisons; a PM trained on those AI labels against one trained
on the annotator's labels of the same pairs.

  python -m experiments.rlaif [--size=nano] [--seeds=0,1,2] [--seed_pairs=400]

Per task (helpfulness; harmlessness on the red-team set) and seed: the AI labels' agreement with
the world's annotator (the "human" labels) and with the gold-better response; the test accuracy,
against the annotator's test labels and their Bayes ceiling, of a PM finetuned from the size's LM
on the AI labels and of one on the annotator's labels of the same pairs. The labeller PM is
trained on the first ``seed_pairs`` of each task's training set; both compared PMs on the rest.
With ``--ppo``, a policy is trained from π0 by PPO against each of the two PMs (the size's PPO
defaults), and π0 and both policies answer the same held-out prompts
(``hh.online.loop.evaluate_policies``): the gold annotator's Elo per task relative to π0 and the
mean gold scores. Mean ± SE over seeds; the table goes to
``$HH_EXPERIMENTS/figures/rlaif.json``.
"""
from __future__ import annotations

import json
import os

import numpy as np
from absl import app, flags

from experiments import common

flags.DEFINE_string("size", "nano", "Model size of the LM every PM starts from.")
flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of the PMs.")
flags.DEFINE_integer("seed_pairs", 400, "Annotator-labelled pairs per task the AI labeller is "
                     "trained on.")
flags.DEFINE_bool("ppo", True, "Also train a policy by PPO from π0 against each compared PM and "
                  "score it with the gold annotator.")
FLAGS = flags.FLAGS
TASKS = ("helpful", "harmless")


def rest_of(base: str, task: str, start: int):
  """The task's training comparisons from ``start`` on: pairs (A = chosen), gold scores."""
  from hh.online import tranche
  rows = common.world_rows(base, task)[1][start:]
  fam = "harmful" if task == "harmless" else "helpful"
  pairs = [tranche.Pair(str(i), r["context_text"], fam, r["chosen"].strip(),
                        r["rejected"].strip()) for i, r in enumerate(rows)]
  gold = np.array([[r[f"chosen_{task}"], r[f"rejected_{task}"]] for r in rows])
  return pairs, gold


def ppo(pm_dir: str, name: str, seed: int) -> str:
  """A policy trained by PPO from π0 against ``pm_dir`` → its exported policy."""
  workdir = os.path.join(common.ROOT, name)
  if not common.finished(workdir, "ppo"):
    common.hh_main(f"configs/ppo.py:size={FLAGS.size}", workdir,
                   f"--config.ppo.init_from={common.cd(FLAGS.size)}", f"--config.ppo.pm={pm_dir}",
                   f"--config.data_dirs.world={common.base(FLAGS.size)}", f"--config.seed={seed}")
  return os.path.join(workdir, "policy")


def main(argv):
  del argv
  from hh.online import tranche
  base = common.base(FLAGS.size)
  n = FLAGS.seed_pairs
  tests = ("hh_sim/helpful:test", "hh_sim/harmless:test")
  test_flag = "--config.pm.test_datasets=" + repr(tests)
  out = {"size": FLAGS.size, "seed_pairs": n, "rows": {}}
  per = {}
  for seed in common.seeds(FLAGS.seeds):
    labeller = common.pm(f"rlaif_labeller_{FLAGS.size}_s{seed}", FLAGS.size,
                         "--config.pm.finetune.datasets=(('hh_sim/helpful:train[:%d]', 1.0), "
                         "('hh_sim/harmless:train[:%d]', 1.0))" % (n, n), test_flag,
                         f"--config.seed={seed}")
    d = os.path.join(common.ROOT, "rlaif", f"{FLAGS.size}_s{seed}")
    ai_sets = []
    for task in TASKS:
      pairs, gold = rest_of(base, task, n)
      labels = tranche.PMLabels(labeller).label(pairs)
      decided = gold[:, 0] != gold[:, 1]
      k = labels.kept
      r = per.setdefault(task, {"ai_vs_annotator": [], "ai_vs_gold": [], "annotator_vs_gold": [],
                                "pm_ai": [], "pm_annotator": [], "ceiling": []})
      r["ai_vs_annotator"].append(float(labels.a_preferred[k].mean()))  # A is the chosen one
      r["ai_vs_gold"].append(float((labels.a_preferred == (gold[:, 0] > gold[:, 1]))
                                   [k & decided].mean()))
      r["annotator_vs_gold"].append(float((gold[:, 0] > gold[:, 1])[decided].mean()))
      files = tranche.write(d, "online", "train", pairs, labels)
      ai_sets += [f"('hh_rlhf/{name}@{d}:train', 1.0)" for name in files]
    human = common.pm(f"rlaif_annotator_{FLAGS.size}_s{seed}", FLAGS.size,
                      "--config.pm.finetune.datasets=(('hh_sim/helpful:train[%d:]', 1.0), "
                      "('hh_sim/harmless:train[%d:]', 1.0))" % (n, n), test_flag,
                      f"--config.seed={seed}")
    ai = common.pm(f"rlaif_ai_{FLAGS.size}_s{seed}", FLAGS.size,
                   f"--config.pm.finetune.datasets=({', '.join(ai_sets)},)", test_flag,
                   f"--config.seed={seed}")
    for task, spec in zip(TASKS, tests):
      for key, work in (("pm_ai", ai), ("pm_annotator", human)):
        res = common.result(work)["by_test_set"][spec]
        per[task][key].append(res["accuracy"])
      per[task]["ceiling"].append(res["bayes_ceiling"])
    if FLAGS.ppo:
      pol = common.gold_evaluation(
          FLAGS.size, f"rlaif_eval_{FLAGS.size}_s{seed}", seed,
          lambda: {f"ppo_{k}": ppo(w, f"rlaif_ppo_{k}_{FLAGS.size}_s{seed}", seed)
                   for k, w in (("ai", ai), ("annotator", human))})["policies"]
      for task in TASKS:
        for name in ("pi0", "ppo_ai", "ppo_annotator"):
          per[task].setdefault(f"gold_{name}", []).append(pol[name][f"gold_{task}"]["mean"])
          if name != "pi0":
            per[task].setdefault(f"elo_{name}", []).append(pol[name][f"gold_elo/{task}"]["elo"])
  for task, r in per.items():
    out["rows"][task] = {k: common.spread(v, [0.0]) for k, v in r.items()}
  print(json.dumps(out, indent=1))
  common.save_json("rlaif.json", out)


if __name__ == "__main__":
  app.run(main)
