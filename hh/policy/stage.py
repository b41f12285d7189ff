"""The ``policies`` stage: sample the base LM, the base LM with the HHH prompt, π0 and best-of-N
of π0 under the PM on held-out prompts, and evaluate them against the gold annotator.

  python -m hh.main --config=configs/policy.py --config.policies.lm=runs/pipeline/lm \
      --config.policies.pi0=runs/pipeline/cd --config.policies.pm=runs/pipeline/pm \
      --config.data_dirs.world=runs/pipeline --workdir=runs/policies

Outputs in ``workdir``: ``evaluation.json/.png`` (the three policies on ``max_prompts`` prompts ×
``samples``; Elo relative to ``config.policies.reference``), ``best_of_n.json/.png`` (N ∈
``best_of`` on ``best_of_prompts`` prompts; Elo relative to N = 1; the KL axis
log N − (N−1)/N, Bai et al. 2022, §4.3; the PM's own score against N), ``best_of_n.jsonl`` (for each prompt,
the best of the largest N as "chosen" and the worst as "rejected", in hh-rlhf's format: a
rejection-sampled tranche for the online loop), and ``policies_result.json``.
"""
from __future__ import annotations

import json
import os

import numpy as np

from hh import io
from hh import tokenizer as tok_lib
from hh.policy import best_of_n, evaluate
from hh.policy import policy as policy_lib
from hh.sim import world as W


def held_out_prompts(config, places) -> tuple[list[str], list[str]]:
  """The first ``config.policies.max_prompts`` held-out prompts → (contexts, request kinds)."""
  from hh import sources
  contexts, kinds = sources.prompts(config.policies.prompts, places, config.policies.max_prompts,
                                    config.policies.get("prompt_max_chars"))
  return contexts, [str(k) for k in kinds]


def load_scorer(config, pm_dir: str, policy: policy_lib.Policy):
  """The PM's Scorer; with text scoring off, the PM and the policy must share a tokenizer."""
  from hh.pm import score as pm_score
  scorer = pm_score.Scorer(pm_dir)
  if not config.policies.text_scoring and not tok_lib.same(scorer.tok, policy.tok):
    raise ValueError(f"config.policies.text_scoring=False needs the PM and the policy to share a "
                     f"tokenizer, but {scorer.tok.path} differs from {policy.tok.path}; set "
                     "config.policies.text_scoring=True (score on text)")
  return scorer


def pm_scores(config, scorer, policy: policy_lib.Policy, samples: policy_lib.Samples) -> np.ndarray:
  """Mean-removed PM scores [R] of the samples: on text, or on the policy's own tokens."""
  if config.policies.text_scoring:
    return scorer.score(samples.contexts, [" " + t for t in samples.texts])
  stops = set(policy_lib.sample_lib.end_of_turn_ids(policy.tok))
  ctx = policy.tok.encode_batch(samples.contexts)
  resp = [[policy.tok.assistant_id] + [int(t) for t, m in zip(toks, mask) if m and int(t)
                                       not in stops]
          for toks, mask in zip(samples.tokens, samples.mask)]
  return scorer.score_ids(ctx, resp)


def _as_policy(samples: policy_lib.Samples, scores: dict[str, np.ndarray],
               kl: np.ndarray | None) -> dict:
  """``scores``: PM name → [R] scores of the samples."""
  return {"contexts": samples.contexts, "texts": samples.texts, "length": samples.length,
          "finished": samples.finished, "pm_scores": scores, "kl": kl}


def _take(samples: policy_lib.Samples, rows: np.ndarray) -> policy_lib.Samples:
  return policy_lib.Samples(contexts=[samples.contexts[r] for r in rows],
                            texts=[samples.texts[r] for r in rows], tokens=samples.tokens[rows],
                            mask=samples.mask[rows], logp_t1=samples.logp_t1[rows],
                            finished=samples.finished[rows], length=samples.length[rows])


def run(config, workdir: str, lm_dir: str, pi0_dir: str, pm_dir: str, world_dir: str | None,
        ppo_dir: str | None = None, test_pm_dir: str | None = None):
  """Samples, scores and evaluates; writes the outputs listed in the module docstring. With
  ``ppo_dir`` (a PPO stage's exported ``policy/``), the PPO policy joins the three as "ppo".
  ``test_pm_dir``: a held-out PM that scores every sample beside the training PM (best-of-N is
  chosen by the training PM only); prompts without a gold annotator (hh-rlhf) are evaluated by
  the PMs alone (``evaluate``'s no-world form) and their samples written to ``samples.jsonl``."""
  from hh import sources
  cfg = config.policies
  for n in cfg.best_of:
    if n < 1:
      raise ValueError(f"config.policies.best_of has N={n}; allowed: N ≥ 1")
  if cfg.samples < 1:
    raise ValueError(f"config.policies.samples={cfg.samples}; allowed: ≥ 1")
  io.makedirs(workdir)
  places = sources.Places.from_config(config, workdir, world_dir)
  world = (W.make_world(config.world.seed, config.world.n_countries, config.world.n_words)
           if sources.has_gold(cfg.prompts) else None)
  contexts, families = held_out_prompts(config, places)
  base = policy_lib.load(lm_dir, "lm", like=config)
  pi0 = policy_lib.load(pi0_dir, "pi0", mesh=base.mesh)
  prompted = base.with_prefix("lm+hhh", sources.prompt_text(config.cd.prompt, places))
  trained = [policy_lib.load(ppo_dir, "ppo", mesh=base.mesh)] if ppo_dir else []
  sampling = policy_lib.sampling_config(base, config.sampling)
  scorer = load_scorer(config, pm_dir, base)
  pm_name = os.path.basename(pm_dir.rstrip("/")) or "pm"
  scorers = {pm_name: scorer}
  if test_pm_dir:
    scorers[os.path.basename(test_pm_dir.rstrip("/")) or "test_pm"] = load_scorer(
        config, test_pm_dir, base)
  reference_pi0 = pi0.with_prefix("pi0", "")

  def all_scores(policy, s) -> dict[str, np.ndarray]:
    return {name: pm_scores(config, sc, policy, s) for name, sc in scorers.items()}

  def sample(policy, ctxs, n, seed):
    s = policy_lib.generate(policy, ctxs, n, sampling, seed, config.sampling.batch_size,
                            config.sampling.buckets)
    kl = s.logp_t1.sum(-1) - policy_lib.response_log_probs(reference_pi0, s,
                                                          config.sampling.batch_size)
    return s, kl

  # 1. the three policies (and PPO's), same prompts and sample slots
  rows_families = [f for f in families for _ in range(cfg.samples)]
  evaluated, raw = {}, {}
  for k, policy in enumerate((base, prompted, pi0, *trained)):
    s, kl = sample(policy, contexts, cfg.samples, cfg.seed + k)
    raw[policy.name] = s
    evaluated[policy.name] = _as_policy(s, all_scores(policy, s), kl)
  result = evaluate.evaluate(world, config.world.to_dict(), evaluated, rows_families,
                             cfg.reference, cfg.seed, stride=cfg.samples)
  evaluate.write(result, workdir, "evaluation",
                 f"{len(contexts)} held-out prompts × {cfg.samples} samples")
  io.write_text(os.path.join(workdir, "samples.jsonl"), "".join(  # for reading
      json.dumps({"policy": n, "context": s.contexts[r], "response": s.texts[r],
                  **{f"score/{k}": float(v[r]) for k, v in evaluated[n]["pm_scores"].items()}})
      + "\n" for n, s in raw.items() for r in range(len(s.texts))))

  # 2. best-of-N of π0 under the PM
  n_max = max(cfg.best_of)
  bo_ctx, bo_fam = contexts[:cfg.best_of_prompts], families[:cfg.best_of_prompts]
  s = policy_lib.generate(pi0, bo_ctx, n_max, sampling, cfg.seed + 10, config.sampling.batch_size,
                          config.sampling.buckets)
  every = all_scores(pi0, s)
  scores = every[pm_name].reshape(len(bo_ctx), n_max)
  base_rows = np.arange(len(bo_ctx)) * n_max
  bo = {}
  for n in sorted(cfg.best_of):
    rows = base_rows + best_of_n.pick(scores[:, :n])
    bo[f"N={n}"] = _as_policy(_take(s, rows), {k: v[rows] for k, v in every.items()}, None)
  bo_result = evaluate.evaluate(world, config.world.to_dict(), bo, bo_fam,
                                f"N={min(cfg.best_of)}", cfg.seed)
  for n in sorted(cfg.best_of):
    bo_result["policies"][f"N={n}"]["kl_bound"] = float(best_of_n.kl_bound(n))
  evaluate.write(bo_result, workdir, "best_of_n",
                 f"best-of-N of π0 under the PM, {len(bo_ctx)} held-out prompts")
  worst = base_rows + np.argmin(scores, axis=1)
  best = base_rows + best_of_n.pick(scores)
  write_tranche(os.path.join(workdir, "best_of_n.jsonl"), bo_ctx,
                [s.texts[r] for r in best], [s.texts[r] for r in worst])

  out = {"evaluation": _headline(result), "best_of_n": _headline(bo_result),
         "prompts": len(contexts), "samples": cfg.samples, "best_of_prompts": len(bo_ctx),
         "examples": result["examples"], "pm": pm_dir}
  io.write_json(os.path.join(workdir, "policies_result.json"), out)
  return out


def _headline(result: dict) -> dict:
  keys = ("gold_helpful", "gold_harmless", "gold_helpful_borderline", "refusal_rate_harmful",
          "needless_refusal_rate_borderline", "length_tokens", "end_of_turn_rate", "kl_to_pi0",
          "gold_elo", "kl_bound")
  kinds = ("pm_score/", "pm_elo/", "pm_win_rate/", "gold_elo/")
  return {n: {k: v for k, v in m.items() if k in keys or k.startswith(kinds)}
          for n, m in result["policies"].items()}


def write_tranche(path: str, contexts, chosen, rejected):
  """hh-rlhf JSON lines: full transcripts ``context + "\\n\\nAssistant: " + response``."""
  io.write_text(path, "".join(
      json.dumps({"chosen": f"{c}{tok_lib.ASSISTANT} {a}",
                  "rejected": f"{c}{tok_lib.ASSISTANT} {b}"}) + "\n"
      for c, a, b in zip(contexts, chosen, rejected, strict=True)))


def summary(result: dict) -> list[str]:
  ev, bo = result["evaluation"], result["best_of_n"]

  def fmt(m, k):
    return f"{m[k]['mean']:.3f} ± {m[k]['se']:.3f}"

  def pm_elos(m):
    return ", ".join(f"{k.split('/', 1)[1]} Elo {m[k]['elo']:+.0f} ± {m[k]['se']:.0f}"
                     for k in m if k.startswith("pm_elo/"))
  if "gold_elo" not in next(iter(ev.values())):  # no gold annotator: the PMs' Elo
    return [f"policies ({result['prompts']} held-out prompts × {result['samples']}), "
            "PM-predicted: " + "; ".join(f"{n}: {pm_elos(m)}" for n, m in ev.items()),
            f"best-of-N of π0 ({result['best_of_prompts']} prompts): " + "; ".join(
                f"{n} (KL {m['kl_bound']:.2f}): {pm_elos(m)}" for n, m in bo.items())]
  lines = [f"policies ({result['prompts']} held-out prompts × {result['samples']}): " + "; ".join(
      f"{n}: helpful {fmt(m, 'gold_helpful')}, harmless {fmt(m, 'gold_harmless')}, gold Elo "
      f"{m['gold_elo']['elo']:+.0f} ± {m['gold_elo']['se']:.0f}" for n, m in ev.items())]
  lines.append(f"best-of-N of π0 ({result['best_of_prompts']} prompts): " + "; ".join(
      f"{n} (KL {m['kl_bound']:.2f}): helpful {fmt(m, 'gold_helpful')}, gold Elo "
      f"{m['gold_elo']['elo']:+.0f} ± {m['gold_elo']['se']:.0f}" for n, m in bo.items()))
  return lines
