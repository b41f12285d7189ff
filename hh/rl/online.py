"""Iterated online RLHF (SPEC §4.5): deploy policies, collect comparisons of their samples,
retrain the PM from scratch on all data so far, retrain the policy from π0 against it, repeat.

  python -m hh.main --config=configs/online.py:size=tiny --workdir=runs/online

Iteration 1 collects a **rejection-sampled** tranche: for each training prompt, two best-of-k
responses of π0 under the current PM (the pipeline's, trained on the base tranche), compared by
the label source. Iteration i ≥ 2 collects an **online** tranche: the policies of the last
``deployed`` iterations (several snapshots, as the paper deployed several to offset entropy
collapse) split the prompts between them, each answering its prompts twice, and the label
source compares the two. Each iteration then trains a PM from the LM (the base comparison sets
plus every tranche so far; PMP as configured) and a policy by PPO from π0 against that PM:
policies are never updated in place (base → RS → online, SPEC §5.1).

Layout of ``workdir`` (the ``online/`` folder of a pipeline)::

  iter_<i>/tranche/<subset>/{train,test}.jsonl.gz   hh-rlhf layout (hh/rl/tranche.py)
  iter_<i>/tranche/pairs.jsonl                       every pair, labelled or not (id, texts)
  iter_<i>/pm/, iter_<i>/ppo/                        the PM and PPO stages' own workdirs
  iter_<i>/stages/{tranche,pm,ppo}.json              written when each step is complete
  iter_<i>/manifest.json                             what produced this iteration (lineage)

A kill anywhere redoes at most the unfinished step, which itself resumes from its checkpoint
(the PM and PPO stages); a tranche is written whole before its record. ``python -m hh.lineage
DIR`` prints the lineage of any PM or policy made here (hh/lineage.py).
"""
from __future__ import annotations

import json
import os
import subprocess

import numpy as np

from hh import io, pipeline, stages
from hh.rl import tranche as tranche_lib

STEPS = ("tranche", "pm", "ppo")


def iter_dir(workdir: str, i: int) -> str:
  return os.path.join(workdir, f"iter_{i}")


def code_version() -> str:
  """The git commit of the code (``+dirty`` with uncommitted changes), or ``unknown``."""
  here = os.path.dirname(os.path.abspath(__file__))
  try:
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                         timeout=10).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                           capture_output=True, text=True, timeout=10).stdout.strip()
  except (OSError, subprocess.SubprocessError):
    return "unknown"
  return (sha + ("+dirty" if dirty else "")) if sha else "unknown"


def tranche_specs(workdir: str, i: int, split: str) -> list[tuple[str, str]]:
  """``(hh_rlhf/<subset>@<dir>:<split>, task)`` of every tranche of iterations 1..i."""
  out = []
  for j in range(1, i + 1):
    rec = pipeline.done(iter_dir(workdir, j), "tranche")
    for name in sorted(rec["files"].get(split, {})):
      out.append((f"hh_rlhf/{name}@{os.path.join(iter_dir(workdir, j), 'tranche')}:{split}",
                  name.split("-", 1)[0]))
  return out


def pm_config(config, workdir: str, i: int):
  """The PM stage's config for iteration i: the base sets plus every tranche so far, harmless
  tranches at the harmless weight λ of the base harmless set (SPEC §2.4), their test splits
  evaluated beside the base test sets."""
  cfg = config.copy_and_resolve_references()
  base = [tuple(d) for d in config.pm.finetune.datasets]
  if config.online.helpful_only:  # the online helpful-only run: helpful comparisons only
    base = [d for d in base if "harmless" not in d[0]]
    cfg.ppo.harmful_fraction = 0.0
  lam = next((w for s, w in base if "harmless" in s), 1.0)
  extra = [(s, 1.0 if task == "helpful" else lam) for s, task in tranche_specs(workdir, i, "train")]
  cfg.pm.finetune.datasets = tuple(base + extra)
  cfg.pm.test_datasets = tuple(config.pm.test_datasets) + tuple(
      s for s, _ in tranche_specs(workdir, i, "test"))
  return cfg


def _prompts(config, places, i: int) -> tuple[list[str], list[str]]:
  from hh.data import sources, tfds_io
  o = config.online
  src = sources.open_split(o.prompts, places)
  rows = [src[k] for k in range(len(src))]
  fams = np.array([tfds_io.text(r["family"]) for r in rows])
  keep = np.flatnonzero(fams != "harmful") if o.helpful_only else np.arange(len(rows))
  rng = np.random.default_rng([config.seed, 77, i])
  pick = rng.permutation(keep)[:o.prompts_per_iteration]
  return [tfds_io.text(rows[k]["context_text"]) for k in pick], [str(fams[k]) for k in pick]


def _labels(config, workdir: str, i: int) -> tranche_lib.LabelSource:
  src = config.online.labels
  if src == "annotator":
    return tranche_lib.AnnotatorLabels(config.world.to_dict(), config.seed + 1000 * i)
  path = os.path.join(src, f"iter_{i}.jsonl")
  if not os.path.exists(path):
    raise ValueError(f"config.online.labels={src!r}: no {path} (one JSONL file of judgements "
                     "per iteration, iter_<i>.jsonl; or 'annotator')")
  return tranche_lib.JsonlLabels(path)


def collect(config, workdir: str, i: int, places, base_pm: str, pi0: str) -> dict:
  """Samples iteration i's pairs, labels them and writes the tranche → its record."""
  from hh.rl import policies
  from hh.rl import policy as policy_lib
  o = config.online
  contexts, families = _prompts(config, places, i)
  seed, bs, buckets = config.seed + 100 * i, config.sampling.batch_size, config.sampling.buckets
  texts_a, texts_b, made_by = [], [], []
  if i == 1:  # rejection sampling: two best-of-k draws of π0 under the base PM
    pol = policy_lib.load(pi0, "pi0")
    s = policy_lib.generate(pol, contexts, 2 * o.rs_k, policy_lib.sampling_config(
        pol, config.sampling), seed, bs, buckets)
    scorer = policies.load_scorer(config, base_pm, pol)
    scores = policies.pm_scores(config, scorer, pol, s).reshape(len(contexts), 2, o.rs_k)
    best = scores.argmax(-1)
    for p in range(len(contexts)):
      texts_a.append(s.texts[(2 * p) * o.rs_k + best[p, 0]])
      texts_b.append(s.texts[(2 * p + 1) * o.rs_k + best[p, 1]])
    made_by = [pi0]
    kind = "rejection-sampled"
  else:  # online: the last `deployed` policies share the prompts, two samples each
    made_by = [os.path.join(iter_dir(workdir, j), "ppo", "policy")
               for j in range(max(1, i - o.deployed), i)]
    texts_a, texts_b = [""] * len(contexts), [""] * len(contexts)
    for d, path in enumerate(made_by):
      mine = list(range(d, len(contexts), len(made_by)))
      pol = policy_lib.load(path, f"iter_{i}_{d}")
      s = policy_lib.generate(pol, [contexts[p] for p in mine], 2, policy_lib.sampling_config(
          pol, config.sampling), seed + d, bs, buckets)
      for k, p in enumerate(mine):
        texts_a[p], texts_b[p] = s.texts[2 * k], s.texts[2 * k + 1]
    kind = "online"
  pairs = [tranche_lib.Pair(f"{i}-{p}", c, f, a, b)
           for p, (c, f, a, b) in enumerate(zip(contexts, families, texts_a, texts_b))]
  labels = _labels(config, workdir, i).label(pairs)
  out = os.path.join(iter_dir(workdir, i), "tranche")
  # held out by pair index: every test_every-th pair is a test comparison
  test = np.arange(len(pairs)) % o.test_every == 0
  files = {}
  for split, sel in (("train", ~test), ("test", test)):
    idx = np.flatnonzero(sel)
    files[split] = tranche_lib.write(out, kind, split, [pairs[k] for k in idx],
                                     tranche_lib.Labels(labels.a_preferred[idx], labels.kept[idx]))
  io.write_text(os.path.join(out, "pairs.jsonl"), "".join(
      json.dumps({"id": p.id, "context": p.context, "family": p.family, "a": p.a, "b": p.b,
                  "kept": bool(k), "a_preferred": bool(a)}) + "\n"
      for p, a, k in zip(pairs, labels.a_preferred, labels.kept)))
  return {"kind": kind, "pairs": len(pairs), "kept": int(labels.kept.sum()), "files": files,
          "made_by": made_by, "labels": o.labels}


def run(config, workdir: str, lm_dir: str, base_pm: str, pi0: str, world_dir: str | None) -> dict:
  """Runs (or resumes) ``config.online.iterations`` iterations → a summary per iteration."""
  from hh.data import sources
  places = sources.Places.from_config(config, workdir, world_dir)
  ctx = stages.Context(world_dir=world_dir, dirs={"lm": lm_dir, "cd": pi0})
  results = []
  for i in range(1, config.online.iterations + 1):
    d = iter_dir(workdir, i)
    rec = pipeline.done(d, "tranche")
    if rec is None:
      rec = collect(config, workdir, i, places, base_pm if i == 1 else None, pi0)
      pipeline.mark(d, "tranche", rec)
    pm_cfg = pm_config(config, workdir, i)
    pm_res = _step(pm_cfg, d, "pm", ctx)
    ppo_cfg = pm_cfg.copy_and_resolve_references()
    ppo_cfg.ppo.init_from, ppo_cfg.ppo.pm = pi0, os.path.join(d, "pm")
    ppo_res = _step(ppo_cfg, d, "ppo", ctx)
    manifest = {
        "iteration": i, "kind": rec["kind"], "code_version": code_version(),
        "seed": config.seed, "labels": rec["labels"],
        "tranche": {"dir": os.path.join(d, "tranche"), "made_by": rec["made_by"],
                    "files": rec["files"]},
        "pm": {"workdir": os.path.join(d, "pm"), "init_from": lm_dir,
               "datasets": [list(x) for x in pm_cfg.pm.finetune.datasets],
               "pmp_datasets": [list(x) for x in pm_cfg.pm.pmp.datasets]},
        "policy": {"workdir": os.path.join(d, "ppo", "policy"), "init_from": pi0,
                   "pm": os.path.join(d, "pm")}}
    if not os.path.exists(os.path.join(d, "manifest.json")):  # a resume keeps the first record
      io.write_json(os.path.join(d, "manifest.json"), manifest)
    results.append({"iteration": i, "kind": rec["kind"], "pairs": rec["pairs"],
                    "kept": rec["kept"], "pm": pm_res.get("by_test_set", {}),
                    "ppo_after": ppo_res.get("after", {})})
  out = {"iterations": results}
  io.write_json(os.path.join(workdir, "online_result.json"), out)
  return out


def _step(config, d: str, name: str, ctx: stages.Context) -> dict:
  res = pipeline.done(d, name)
  if res is None:
    res = stages.run(name, config, os.path.join(d, name), ctx)
    pipeline.mark(d, name, res)
  return res


def summary(result: dict) -> list[str]:
  return [f"online iteration {r['iteration']} ({r['kind']}): {r['kept']} of {r['pairs']} pairs "
          "labelled" for r in result["iterations"]]
