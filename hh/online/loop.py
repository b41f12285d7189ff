"""Iterated online RLHF (Bai et al. 2022, §4.5): deploy policies, collect comparisons of their samples,
retrain the PM from scratch on all data so far, retrain the policy from π0 against it, repeat.

  python -m hh.main --config=configs/online.py:size=tiny --workdir=runs/online

Iteration 1 collects a **rejection-sampled** tranche: for each training prompt, two best-of-k
responses of π0 under the current PM (the pipeline's, trained on the base tranche), compared by
the label source. Iteration i ≥ 2 collects an **online** tranche: the policies of the last
``deployed`` iterations (several snapshots, as the paper deployed several to offset entropy
collapse) split the prompts between them, each answering its prompts twice, and the label
source compares the two. With ``deploy_k`` > 1 each of those responses is the best of
``deploy_k`` samples under the newest PM (the deployed model is the policy plus rejection
sampling: the best policy available when PPO alone is weaker than best-of-k of π0). Each
iteration then trains a PM from the LM (the base comparison sets plus every tranche so far; PMP
as configured) and a policy by PPO from π0 against that PM:
policies are never updated in place (base → RS → online, Bai et al. 2022, §2.2–2.3).

Layout of ``workdir`` (the ``online/`` folder of a pipeline)::

  iter_<i>/sampled.jsonl                             the sampled pairs, each with its shown order
  iter_<i>/to_label.jsonl                            what people judge: id, conversation, A, B
  iter_<i>/labels.jsonl                              their judgements (``labels="people"``)
  iter_<i>/tranche/<subset>/{train,test}.jsonl.gz   hh-rlhf layout (hh/online/tranche.py)
  iter_<i>/tranche/pairs.jsonl                       every pair, labelled or not (id, texts)
  iter_<i>/pm/, iter_<i>/ppo/                        the PM and PPO stages' own workdirs
  iter_<i>/stages/{sample,tranche,pm,ppo}.json       written when each step is complete
  iter_<i>/manifest.json                             what produced this iteration (lineage)
  controlled/{base,mix}/{pm,ppo}/                    Fig. 16's two arms (``controlled``)
  evaluation.json/.png                               π0, the static policy, every iteration's
                                                     policy (and the arms), the reference answers
  online_result.json                                 per iteration: tranche quality, PM accuracy

Every PM here is finetuned from the base PM's PMP phase (``pm.pmp_from``; PMP is done once, as
in the paper) on the base comparisons plus the tranches so far. With ``controlled``, Fig. 16's
experiment follows the iterations: two PMs of equal comparison count, one on base data only,
one on an even base / rejection-sampled / online mix (each part with the same helpful and
harmless counts), each used to train a policy from π0 with the same settings.

With people as the label source (``online.labels="people"``, or a folder of ``iter_<i>.jsonl``
files), an iteration samples its pairs, writes ``to_label.jsonl`` and stops (exit code
``hh.workdir.WAIT_EXIT_CODE``) with one line saying what to label, where the judgements go
(``python -m hh.label serve`` writes them) and that the same command goes on; the rerun reads
them and continues from the sampled pairs, never resampling. With ``online.unlabelled="drop"``
a partial judgement file is enough: the unjudged pairs are left out of the tranche.

A kill anywhere redoes at most the unfinished step, which itself resumes from its checkpoint
(the PM and PPO stages); a tranche is written whole before its record. ``python -m hh.lineage
DIR`` prints the lineage of any PM or policy made here (hh/lineage.py).
"""
from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence

import numpy as np

from hh import io
from hh import workdir as wd
from hh.online import tranche as tranche_lib
from hh.sim import world as W

STEPS = ("sample", "tranche", "pm", "ppo")


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
    rec = wd.done(iter_dir(workdir, j), "tranche")
    for name in sorted(rec["files"].get(split, {})):
      out.append((f"hh_rlhf/{name}@{os.path.join(iter_dir(workdir, j), 'tranche')}:{split}",
                  name.split("-", 1)[0]))
  return out


def _base_sets(config) -> list[tuple[str, float]]:
  base = [tuple(d) for d in config.pm.finetune.datasets]
  if config.online.helpful_only:  # the online helpful-only run: helpful comparisons only
    base = [d for d in base if "harmless" not in d[0]]
  return base


def _harmless_weight(config) -> float:
  """λ of the base harmless set (Bai et al. 2022, §3.1, App. A.2), given to every harmless tranche too."""
  return next((w for s, w in config.pm.finetune.datasets if "harmless" in s), 1.0)


def _stage_config(config, base_pm: str, finetune: list[tuple[str, float]]):
  """The PM (and PPO) stage config of a PM finetuned on ``finetune``: from the base PM's PMP
  phase when it had one, test sets the base ones plus every tranche's test split so far."""
  cfg = config.copy_and_resolve_references()
  if config.online.helpful_only:
    cfg.ppo.harmful_fraction = 0.0
  cfg.pm.finetune.datasets = tuple(finetune)
  cfg.pm.finetune.max_pairs = None
  if config.pm.pmp.datasets:  # PMP once (the base PM's), finetuning from it each time
    cfg.pm.pmp.datasets = ()
    cfg.pm.pmp_from = os.path.join(base_pm, "pmp")
  return cfg


def pm_config(config, workdir: str, i: int, base_pm: str):
  """The PM stage's config for iteration i: the base sets plus every tranche so far, harmless
  tranches at the harmless weight λ of the base harmless set (Bai et al. 2022, §3.1, App. A.2), their test splits
  evaluated beside the base test sets."""
  lam = _harmless_weight(config)
  extra = [(s, 1.0 if task == "helpful" else lam) for s, task in tranche_specs(workdir, i, "train")]
  cfg = _stage_config(config, base_pm, _base_sets(config) + extra)
  cfg.pm.test_datasets = tuple(config.pm.test_datasets) + tuple(
      s for s, _ in tranche_specs(workdir, i, "test"))
  return cfg


def controlled_sets(config, workdir: str) -> dict[str, list[tuple[str, float]]]:
  """Fig. 16's two finetuning sets (Bai et al. 2022, §4.5) from iterations 1..N's tranches: per task, n
  comparisons each of base, rejection-sampled and online data (the online part split evenly
  over iterations 2..N) for "mix", and 3n base comparisons for "base"; n is the most every
  part holds. → {"base": [(spec, weight)], "mix": [...]}."""
  n_it = config.online.iterations
  if n_it < 2:
    raise ValueError(f"config.online.controlled needs config.online.iterations ≥ 2 (an online "
                     f"tranche), got {n_it}")
  lam = _harmless_weight(config)
  rows = {j: wd.done(iter_dir(workdir, j), "tranche")["files"].get("train", {})
          for j in range(1, n_it + 1)}
  out = {"base": [], "mix": []}
  for spec, weight in _base_sets(config):
    task = "harmless" if "harmless" in spec else "helpful"
    rs, on = f"{task}-rejection-sampled", f"{task}-online"
    per_online = min(rows[j].get(on, {}).get("rows", 0) for j in range(2, n_it + 1))
    n = min(rows[1].get(rs, {}).get("rows", 0), (n_it - 1) * per_online)
    n -= n % (n_it - 1)
    if n == 0:
      continue
    w = 1.0 if task == "helpful" else lam
    name, _, split = spec.partition(":")
    split = split or "train"
    out["base"].append((f"{name}:{split}[:{3 * n}]", weight))
    out["mix"].append((f"{name}:{split}[:{n}]", weight))
    out["mix"].append((f"hh_rlhf/{rs}@{os.path.join(iter_dir(workdir, 1), 'tranche')}:train[:{n}]",
                       w))
    out["mix"] += [(f"hh_rlhf/{on}@{os.path.join(iter_dir(workdir, j), 'tranche')}:train"
                    f"[:{n // (n_it - 1)}]", w) for j in range(2, n_it + 1)]
  if not out["base"]:
    raise ValueError("config.online.controlled: the tranches hold no comparisons of a task in "
                     "both the rejection-sampled and the online data")
  return out


def _prompts(config, places, i: int) -> tuple[list[str], list[str]]:
  from hh import sources
  o = config.online
  contexts, fams = sources.prompts(o.prompts, places)
  keep = np.flatnonzero(fams != "harmful") if o.helpful_only else np.arange(len(contexts))
  rng = np.random.default_rng([config.seed, 77, i])
  pick = rng.permutation(keep)[:o.prompts_per_iteration]
  return [contexts[k] for k in pick], [str(fams[k]) for k in pick]


def labels_path(config, workdir: str, i: int) -> str | None:
  """Where iteration i's judgements are read (None: the world's annotator labels)."""
  src = config.online.labels
  if src == "annotator" or src.startswith("pm:"):
    return None
  if src == "people":
    return os.path.join(iter_dir(workdir, i), "labels.jsonl")
  return os.path.join(src, f"iter_{i}.jsonl")


def _label(config, workdir: str, i: int, pairs: list) -> tranche_lib.Labels:
  """Iteration i's labels, or ``Waiting`` while judgements are missing (``online.unlabelled``:
  "wait" for every pair, "drop" to go on without the unjudged ones once any are there)."""
  o = config.online
  if o.unlabelled not in ("wait", "drop"):
    raise ValueError(f"config.online.unlabelled={o.unlabelled!r}; allowed: 'wait', 'drop'")
  if o.labels.startswith("pm:"):  # AI feedback: another PM's preferences
    return tranche_lib.PMLabels(o.labels[3:]).label(pairs)
  path = labels_path(config, workdir, i)
  if path is None:
    return tranche_lib.AnnotatorLabels(config.world.to_dict(), config.seed + 1000 * i).label(pairs)
  labels = tranche_lib.JsonlLabels(path).label(pairs) if io.exists(path) else None
  judged = 0 if labels is None else int(labels.judged.sum())
  if judged == len(pairs) or (judged and o.unlabelled == "drop"):
    return labels
  pending = os.path.join(iter_dir(workdir, i), "to_label.jsonl")
  raise wd.Waiting(
      f"online iteration {i}: {len(pairs) - judged} of {len(pairs)} pairs wait for judgements; "
      f"label {pending} into {path} (python -m hh.label serve --pairs={pending} --out={path}) "
      "and run the same command again")


def _sample_pairs(config, pol, scorer, contexts: list[str], k: int, seed: int
                  ) -> tuple[list[str], list[str]]:
  """Two responses per context, each the best of ``k`` samples under ``scorer`` (the first of
  two plain samples when k = 1, nothing scored) → (texts_a, texts_b)."""
  from hh.policy import best_of_n
  from hh.policy import policy as policy_lib
  from hh.policy import stage as policies
  s = policy_lib.generate(pol, contexts, 2 * k, policy_lib.sampling_config(pol, config.sampling),
                          seed, config.sampling.batch_size, config.sampling.buckets)
  best = np.zeros((len(contexts), 2), np.int64)
  if k > 1:  # rows 2p·k … (2p+2)·k − 1 are prompt p's two groups of k samples
    scores = policies.pm_scores(config, scorer, pol, s).reshape(2 * len(contexts), k)
    best = best_of_n.pick(scores).reshape(len(contexts), 2)
  return ([s.texts[2 * p * k + best[p, 0]] for p in range(len(contexts))],
          [s.texts[(2 * p + 1) * k + best[p, 1]] for p in range(len(contexts))])


def sample(config, workdir: str, i: int, places, base_pm: str, pi0: str) -> dict:
  """Samples iteration i's pairs → ``sampled.jsonl`` (the pairs as sampled, with the order each
  is shown in) and ``to_label.jsonl`` (what people judge), and the step's record.

  Iteration 1: two best-of-k draws of π0 under the base PM. Later iterations: the deployed
  policies' responses, each the best of ``deploy_k`` samples under the newest PM (iteration
  i − 1's, the one the newest policy trained against) — plain samples at the default
  deploy_k = 1, the paper's online deployment."""
  from hh.policy import policy as policy_lib
  from hh.policy import stage as policies
  o = config.online
  contexts, families = _prompts(config, places, i)
  seed = config.seed + 100 * i
  if i == 1:  # rejection sampling: two best-of-k draws of π0 under the base PM
    k, rerank, kind, made_by = o.rs_k, base_pm, "rejection-sampled", [pi0]
  else:  # online: the last `deployed` policies share the prompts, two responses each
    k, rerank, kind = o.deploy_k, os.path.join(iter_dir(workdir, i - 1), "pm"), "online"
    made_by = [os.path.join(iter_dir(workdir, j), "ppo", "policy")
               for j in range(max(1, i - o.deployed), i)]
  texts_a, texts_b = [""] * len(contexts), [""] * len(contexts)
  scorer = None
  for d, path in enumerate(made_by):
    mine = list(range(d, len(contexts), len(made_by)))
    pol = policy_lib.load(path, "pi0" if i == 1 else f"iter_{i}_{d}")
    if k > 1 and scorer is None:
      scorer = policies.load_scorer(config, rerank, pol)
    a, b = _sample_pairs(config, pol, scorer, [contexts[p] for p in mine], k, seed + d)
    for q, p in enumerate(mine):
      texts_a[p], texts_b[p] = a[q], b[q]
  pairs = [tranche_lib.Pair(f"{i}-{p}", c, f, a, b)
           for p, (c, f, a, b) in enumerate(zip(contexts, families, texts_a, texts_b))]
  swapped = tranche_lib.shown_order(len(pairs), [config.seed, 91, i])
  d = iter_dir(workdir, i)
  io.write_text(os.path.join(d, "sampled.jsonl"), "".join(
      json.dumps({"id": p.id, "context": p.context, "family": p.family, "a": p.a, "b": p.b,
                  "shown": "ba" if s else "ab"}) + "\n" for p, s in zip(pairs, swapped)))
  io.write_text(os.path.join(d, "to_label.jsonl"), "".join(
      json.dumps(r) + "\n" for r in tranche_lib.to_label(pairs, swapped)))
  rec = {"kind": kind, "pairs": len(pairs), "made_by": made_by}
  if k > 1:  # best-of-k under this PM (absent: plain samples)
    rec |= {"best_of": int(k), "reranked_by": rerank}
  return rec


def collect(config, workdir: str, i: int, sampled: dict) -> dict:
  """Labels iteration i's sampled pairs and writes the tranche → its record (``Waiting`` while
  people's judgements are missing: nothing sampled is redone)."""
  o = config.online
  pairs = [tranche_lib.Pair(r["id"], r["context"], r["family"], r["a"], r["b"])
           for r in io.read_jsonl(os.path.join(iter_dir(workdir, i), "sampled.jsonl"),
                                        {"id": str})]
  labels = _label(config, workdir, i, pairs)
  out = os.path.join(iter_dir(workdir, i), "tranche")
  # held out by pair index: every test_every-th pair is a test comparison
  test = np.arange(len(pairs)) % o.test_every == 0
  files = {}
  for split, sel in (("train", ~test), ("test", test)):
    idx = np.flatnonzero(sel)
    files[split] = tranche_lib.write(out, sampled["kind"], split, [pairs[k] for k in idx],
                                     tranche_lib.Labels(labels.a_preferred[idx], labels.kept[idx]))
  io.write_text(os.path.join(out, "pairs.jsonl"), "".join(
      json.dumps({"id": p.id, "context": p.context, "family": p.family, "a": p.a, "b": p.b,
                  "kept": bool(k), "a_preferred": bool(a)}) + "\n"
      for p, a, k in zip(pairs, labels.a_preferred, labels.kept)))
  rec = {**sampled, "kept": int(labels.kept.sum()), "files": files, "labels": o.labels}
  if labels.judged is not None:
    rec["judged"] = int(labels.judged.sum())
  return rec


def quality(world, pairs: Sequence[dict]) -> dict:
  """A tranche's gold quality (Bai et al. 2022, §4.5: base → RS → online), per task — helpfulness on helpful
  comparisons, harmlessness on the red-team ones (harmful prompts) — as mean ± SE of three
  response sets:

  * ``task``: both responses of the kept pairs whose responses differ (the comparisons the
    tranche holds);
  * ``task/chosen``: the annotator's preferred response of those pairs;
  * ``task/sampled``: both responses of every pair, before the annotator drops its unsure ties —
    the quality of what the deployed policies produced. Ties are pairs of equally good responses,
    so where a policy is often right, dropping them leaves the pairs with one bad response and
    pulls the kept mean down (``base_quality`` measures the base data the same three ways).

  ``pairs``: dicts with context, family, a, b, kept, a_preferred."""
  from hh.policy import evaluate
  out = {}
  for task, col in (("helpful", 0), ("harmless", 1)):
    mine = [p for p in pairs if (p["family"] == "harmful") == (task == "harmless")]
    g = (evaluate.gold_scores(world, [p["context"] for p in mine for _ in (0, 1)],
                              [t for p in mine for t in (p["a"], p["b"])])[:, col]
         if mine else np.zeros(0)).reshape(-1, 2)                          # [pairs, (a, b)]
    kept = np.array([p["kept"] and p["a"] != p["b"] for p in mine], bool)
    a_won = np.array([p["a_preferred"] for p in mine], bool)
    out[task] = evaluate.mean_se(g[kept].ravel())
    out[f"{task}/chosen"] = evaluate.mean_se(np.where(a_won, g[:, 0], g[:, 1])[kept])
    out[f"{task}/sampled"] = evaluate.mean_se(g.ravel())
  return out


def base_quality(config, places) -> dict:
  """The base comparison sets' gold quality, keyed as ``quality``: the kept pairs from the sets'
  rows (they carry gold scores), ``/sampled`` from fresh draws of the world's base responses
  (``dataset.base_response_scores``: the sets hold kept pairs only)."""
  from hh import sources
  from hh.policy import evaluate
  from hh.sim import dataset
  out = {}
  for spec, _ in _base_sets(config):
    if not spec.startswith("hh_sim/"):
      continue
    task = "harmless" if "harmless" in spec else "helpful"
    src = sources.open_split(spec, places)
    g = np.array([[float(src[k][f"{side}_{task}"]) for side in ("chosen", "rejected")]
                  for k in range(len(src))]).reshape(-1, 2)
    out[task] = evaluate.mean_se(g.ravel())
    out[f"{task}/chosen"] = evaluate.mean_se(g[:, 0])
    out[f"{task}/sampled"] = evaluate.mean_se(dataset.base_response_scores(config.world.to_dict(), task))
  return out


def _read_pairs(workdir: str, i: int) -> list[dict]:
  with io.open(os.path.join(iter_dir(workdir, i), "tranche", "pairs.jsonl")) as f:
    return [json.loads(line) for line in f if line.strip()]


def evaluate_policies(config, workdir: str, places, pi0: str, pms: dict[str, str],
                      trained: dict[str, str]) -> dict:
  """π0, the ``trained`` policies (name → exported policy dir) and the world's reference answers
  (its "professional writers", Fig. 24) on the held-out prompts: gold metrics, gold Elo and
  the PM-predicted Elo under each of ``pms`` (name → PM dir), relative to π0 (Bai et al. 2022, eq. 2.1)
  → ``evaluation.json/.png`` in ``workdir``."""
  from hh.policy import evaluate
  from hh.policy import policy as policy_lib
  from hh.policy import stage as policies
  from hh.sim import dataset, responses
  cfg = config.policies
  world = W.make_world(config.world.seed, config.world.n_countries, config.world.n_words)
  contexts, families = policies.held_out_prompts(config, places)
  ref = policy_lib.load(pi0, "pi0")
  sampling = policy_lib.sampling_config(ref, config.sampling)
  scorers = {n: policies.load_scorer(config, d, ref) for n, d in pms.items()}
  bs, buckets = config.sampling.batch_size, config.sampling.buckets
  evaluated = {}
  for k, (name, path) in enumerate({"pi0": pi0, **trained}.items()):
    pol = ref if name == "pi0" else policy_lib.load(path, name, mesh=ref.mesh)
    s = policy_lib.generate(pol, contexts, cfg.samples, sampling, cfg.seed + k, bs, buckets)
    kl = s.logp_t1.sum(-1) - policy_lib.response_log_probs(ref, s, bs)
    evaluated[name] = {"contexts": s.contexts, "texts": s.texts, "length": s.length,
                       "finished": s.finished, "kl": kl,
                       "pm_scores": {n: policies.pm_scores(config, sc, pol, s)
                                     for n, sc in scorers.items()}}
  rows_ctx = evaluated["pi0"]["contexts"]
  rng = np.random.default_rng([config.seed, 24])
  texts = [responses.respond(world, rng, c, dataset.REFERENCE_MIX) for c in rows_ctx]
  evaluated["reference"] = {
      "contexts": rows_ctx, "texts": texts, "finished": np.ones(len(texts), bool), "kl": None,
      "length": np.array([len(x) + 1 for x in ref.tok.encode_batch(texts)]),
      "pm_scores": {n: sc.score(rows_ctx, [" " + t for t in texts]) for n, sc in scorers.items()}}
  result = evaluate.evaluate(world, config.world.to_dict(), evaluated,
                             [f for f in families for _ in range(cfg.samples)], "pi0", cfg.seed,
                             stride=cfg.samples)
  evaluate.write(result, workdir, "evaluation", f"the online loop's policies: {len(contexts)} "
                 f"held-out prompts × {cfg.samples} samples")
  return result


def run(config, workdir: str, lm_dir: str, base_pm: str, pi0: str, ctx: wd.Context,
        static: str | None = None) -> dict:
  """Runs (or resumes) ``config.online.iterations`` iterations, Fig. 16's arms when
  ``config.online.controlled``, and the evaluation → a summary per iteration. ``static``: an
  exported policy trained on the base PM (the pipeline's PPO), evaluated beside the others.
  Each iteration's PM and PPO stages are run by the runner (``ctx.run_stage``) in
  ``iter_<i>/pm`` and ``iter_<i>/ppo``."""
  from hh import sources
  world_dir = ctx.world_dir
  places = sources.Places.from_config(config, workdir, world_dir)
  dirs = {"lm": lm_dir, "cd": pi0}

  def step(cfg, d: str, name: str) -> dict:
    return ctx.run_stage(name, cfg, d, dirs=dirs)
  world = W.make_world(config.world.seed, config.world.n_countries, config.world.n_words)
  results = []
  for i in range(1, config.online.iterations + 1):
    d = iter_dir(workdir, i)
    rec = wd.done(d, "tranche")
    if rec is None:
      sampled = wd.done(d, "sample")
      if sampled is None:
        sampled = sample(config, workdir, i, places, base_pm, pi0)
        wd.mark(d, "sample", sampled)
      rec = collect(config, workdir, i, sampled)
      wd.mark(d, "tranche", rec)
    pm_cfg = pm_config(config, workdir, i, base_pm)
    pm_res = step(pm_cfg, d, "pm")
    ppo_res = step(_ppo_config(pm_cfg, pi0, os.path.join(d, "pm")), d, "ppo")
    manifest = {
        "iteration": i, "kind": rec["kind"], "code_version": code_version(),
        "seed": config.seed, "labels": rec["labels"],
        "tranche": {"dir": os.path.join(d, "tranche"), "made_by": rec["made_by"],
                    "files": rec["files"]},
        "pm": {"workdir": os.path.join(d, "pm"), "init_from": lm_dir,
               "pmp_from": pm_cfg.pm.get("pmp_from"),
               "datasets": [list(x) for x in pm_cfg.pm.finetune.datasets],
               "pmp_datasets": [list(x) for x in pm_cfg.pm.pmp.datasets]},
        "policy": {"workdir": os.path.join(d, "ppo", "policy"), "init_from": pi0,
                   "pm": os.path.join(d, "pm")}}
    if not io.exists(os.path.join(d, "manifest.json")):  # a resume keeps the first record
      io.write_json(os.path.join(d, "manifest.json"), manifest)
    results.append({"iteration": i, "kind": rec["kind"], "pairs": rec["pairs"],
                    "kept": rec["kept"], "quality": quality(world, _read_pairs(workdir, i)),
                    "pm": pm_res.get("by_test_set", {}), "ppo_after": ppo_res.get("after", {})})
  n_it = config.online.iterations
  trained = {"static": static} if static else {}
  trained |= {f"online_{i}": os.path.join(iter_dir(workdir, i), "ppo", "policy")
              for i in range(1, n_it + 1)}
  arms = {}
  if config.online.controlled:
    for arm, sets in controlled_sets(config, workdir).items():
      d = os.path.join(workdir, "controlled", arm)
      cfg = _stage_config(config, base_pm, sets)
      cfg.pm.test_datasets = pm_config(config, workdir, n_it, base_pm).pm.test_datasets
      res = step(cfg, d, "pm")
      step(_ppo_config(cfg, pi0, os.path.join(d, "pm")), d, "ppo")
      arms[arm] = {"datasets": [list(x) for x in sets], "pairs": res["phases"]["finetune"]["pairs"],
                   "pm": res.get("by_test_set", {})}
      trained[f"{arm}_only" if arm == "base" else arm] = os.path.join(d, "ppo", "policy")
  ev = wd.done(workdir, "evaluation")
  if ev is None:
    full = evaluate_policies(config, workdir, places, pi0,
                             {"base_pm": base_pm, "final_pm": os.path.join(iter_dir(workdir, n_it),
                                                                           "pm")}, trained)
    ev = {n: {k: v for k, v in m.items() if k in _EVAL_KEYS or k.startswith(("pm_score/",
                                                                             "pm_elo/", "gold_elo/"))}
          for n, m in full["policies"].items()}
    wd.mark(workdir, "evaluation", ev)
  out = {"base_quality": base_quality(config, places), "iterations": results,
         "controlled": arms, "evaluation": ev}
  io.write_json(os.path.join(workdir, "online_result.json"), out)
  return out


_EVAL_KEYS = ("gold_helpful", "gold_harmless", "gold_helpful_borderline", "refusal_rate_harmful",
              "needless_refusal_rate_borderline", "length_tokens", "kl_to_pi0", "gold_elo")


def _ppo_config(pm_cfg, pi0: str, pm_dir: str):
  cfg = pm_cfg.copy_and_resolve_references()
  cfg.ppo.init_from, cfg.ppo.pm = pi0, pm_dir
  return cfg


def _ms(m: dict) -> str:
  return f"{m['mean']:.3f} ± {m['se']:.3f}"


def summary(result: dict) -> list[str]:
  """Tranche quality base → RS → online, the PMs' accuracies and the gold Elo of the policies."""
  q = result.get("base_quality", {})
  lines = ["online: base tranche gold quality " + ", ".join(f"{t} {_ms(m)}" for t, m in q.items())]
  for r in result["iterations"]:
    lines.append(
        f"online iteration {r['iteration']} ({r['kind']}): {r['kept']} of {r['pairs']} pairs "
        "labelled; gold quality " + ", ".join(f"{t} {_ms(m)}" for t, m in r["quality"].items()
                                              if m["n"]) +
        "; PM accuracy " + ", ".join(f"{k.split('@')[0]}:{k.rsplit(':', 1)[-1]} "
                                     f"{v['accuracy']:.3f}" for k, v in r["pm"].items()))
  for n, m in result.get("evaluation", {}).items():
    e = m["gold_elo"]
    by_task = "".join(f" ({t} {m[f'gold_elo/{t}']['elo']:+.0f} ± {m[f'gold_elo/{t}']['se']:.0f})"
                      for t in ("helpful", "harmless") if f"gold_elo/{t}" in m)
    lines.append(f"online evaluation {n}: gold Elo vs π0 {e['elo']:+.0f} ± {e['se']:.0f}{by_task}; "
                 f"gold helpful {_ms(m['gold_helpful'])}, harmless {_ms(m['gold_harmless'])}")
  return lines
