"""Policy evaluation on held-out prompts, against the world's gold annotator (Bai et al. 2022, eq. 2.1, §4).

  python -m hh.main --config=configs/policy.py --workdir=runs/eval \
      --config.data_dirs.world=runs/pipeline --config.policies.pm=runs/pipeline/pm \
      --config.policies.lm=runs/pipeline/lm --config.policies.pi0=runs/pipeline/cd

For policies that answered the same prompts (N samples each), ``evaluate`` reports per policy:

* gold helpfulness on helpful requests, gold harmlessness on harmful ones, gold helpfulness on
  borderline ones (``hh/sim/gold.py``), each as mean ± standard error over samples;
* refusal rates (on harmful and on helpful requests) and the needless-refusal rate on borderline
  requests; response length (tokens), the end-of-turn rate (a turn that ended within the cap);
* mean-removed scores under each PM, and KL(π‖π0) = mean over samples of Σ_t log π − log π0
  (nats per response, Bai et al. 2022, §4.1) where π0's log-probs are given;
* gold Elo (the world's stand-in for crowdworker Elo): the simulated annotator compares the
  policies' responses to the same prompt pairwise — the helpful task on helpful and borderline
  prompts, the red-team task on harmful ones, with the comparison data's temperature and
  "unsure" ties — and ``hh/elo.py`` fits Elo with standard errors, the reference at 0; also
  fitted on each task's comparisons alone (``gold_elo/helpful``, ``gold_elo/harmless``: the
  helpfulness and harmlessness panels of Figs. 1 and 35, from the same annotator draws);
* PM-predicted Elo: 174 × (mean PM score − the reference's), Bai et al. 2022, eq. 2.1, and
  the PM's predicted win rate against the reference, mean of σ(r − r_ref) over the same rows.

Without a world (``world=None``: real prompts, no gold annotator) the evaluation is the paper's:
PM scores, PM-predicted Elo and win rates under each PM given (a held-out test PM among them),
lengths, end-of-turn rates and KL; the gold keys are absent.

Output: ``evaluation.json`` and ``evaluation.png`` in the output folder (read by the report).
"""
from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from hh import elo, io
from hh.sim import annotator, gold
from hh.sim import world as W

HELPFUL = ("arithmetic", "fact", "string", "followup")


def mean_se(x) -> dict:
  x = np.asarray(x, np.float64)
  if x.size == 0:
    return {"mean": float("nan"), "se": float("nan"), "n": 0}
  se = float(x.std(ddof=1) / np.sqrt(x.size)) if x.size > 1 else float("nan")
  return {"mean": float(x.mean()), "se": se, "n": int(x.size)}


def logp_accuracy(policy, rows: Sequence[tuple[str, str, str]], batch_size: int,
                  max_tokens: int) -> dict:
  """Fig. 34's "mean log-p accuracy" (Bai et al. 2022, §4.5): the fraction of comparisons (context, better,
  worse response texts) on which the policy's mean per-token log-prob of the better response is
  the higher (a tie counts half) → mean ± SE over the comparisons."""
  from hh.policy import policy as policy_lib
  n = len(rows)
  s, k = policy_lib.text_log_probs(policy, [c for c, _, _ in rows] * 2,
                                   [g for _, g, _ in rows] + [b for _, _, b in rows],
                                   batch_size, max_tokens)
  mean = s / np.maximum(k, 1)
  good, bad = mean[:n], mean[n:]
  return mean_se((good > bad) + 0.5 * (good == bad))


def gold_scores(world: W.World, contexts: Sequence[str], texts: Sequence[str]) -> np.ndarray:
  """[R, 2] (helpfulness, harmlessness) of each response (``" " + text`` after the context)."""
  return np.array([gold.scores(world, c, " " + t) for c, t in zip(contexts, texts, strict=True)],
                  np.float64).reshape(-1, 2)


def policy_metrics(world: W.World | None, contexts: Sequence[str], texts: Sequence[str],
                   families: Sequence[str], length: np.ndarray, finished: np.ndarray,
                   pm_scores: dict[str, np.ndarray] | None = None,
                   kl: np.ndarray | None = None) -> dict:
  """One policy's metrics over its R samples (``families`` [R]: each row's request family);
  the gold ones only with a ``world``."""
  out = {"length_tokens": mean_se(length), "end_of_turn_rate": mean_se(finished),
         "samples": int(len(texts))}
  if world is not None:
    fam = np.asarray(families)
    g = gold_scores(world, contexts, texts)
    refused = np.array([gold.is_refusal(t) for t in texts], bool)
    helpful, harmful, border = np.isin(fam, HELPFUL), fam == "harmful", fam == "borderline"
    out |= {"gold_helpful": mean_se(g[helpful, 0]), "gold_harmless": mean_se(g[harmful, 1]),
            "gold_helpful_borderline": mean_se(g[border, 0]),
            "refusal_rate_harmful": mean_se(refused[harmful]),
            "refusal_rate_helpful": mean_se(refused[helpful]),
            "needless_refusal_rate_borderline": mean_se(refused[border])}
  for name, s in (pm_scores or {}).items():
    out[f"pm_score/{name}"] = mean_se(s)
  if kl is not None:
    out["kl_to_pi0"] = mean_se(kl)
  return out


TASKS = ("helpful", "harmless")  # the annotator's task per row: red-team on harmful requests


def gold_wins(world: W.World, contexts: Sequence[str], families: Sequence[str],
              responses: dict[str, Sequence[str]], temperature: float, tie_margin: float,
              seed: int) -> np.ndarray:
  """The annotator's pairwise choices between every pair of policies on every row (rows aligned
  across policies; "unsure" ties dropped) → wins [2, M, M]: ``wins[t, i, j]`` = rows of task
  ``TASKS[t]`` (the helpful task on helpful and borderline prompts, the red-team task on
  harmful ones) on which policy i's response was preferred to policy j's."""
  names = list(responses)
  task = np.array([1 if f == "harmful" else 0 for f in families])
  scores = {n: gold_scores(world, contexts, responses[n]) for n in names}
  rng = np.random.default_rng([seed, 7])
  wins = np.zeros((len(TASKS), len(names), len(names)))
  for i in range(len(names)):
    for j in range(i + 1, len(names)):
      si = np.take_along_axis(scores[names[i]], task[:, None], 1)[:, 0]
      sj = np.take_along_axis(scores[names[j]], task[:, None], 1)[:, 0]
      a, kept = annotator.annotate(si, sj, temperature, tie_margin, rng)
      for t in range(len(TASKS)):
        on = kept & (task == t)
        wins[t, i, j] += np.sum(a & on)
        wins[t, j, i] += np.sum(~a & on)
  return wins


def fit(names: Sequence[str], wins: np.ndarray, reference: str) -> dict[str, dict]:
  """Elo ± standard error per policy from a win matrix [M, M] (``hh/elo.py``), the reference
  at 0, with each policy's number of kept comparisons."""
  names = list(names)
  if reference not in names:
    raise ValueError(f"config.policies.reference={reference!r}; allowed: {', '.join(names)}")
  e, se = elo.fit_elo(wins, reference=names.index(reference))
  return {n: {"elo": float(e[k]), "se": float(se[k]), "comparisons": int(wins[k].sum() +
                                                                           wins[:, k].sum())}
          for k, n in enumerate(names)}


def gold_elo(world: W.World, contexts: Sequence[str], families: Sequence[str],
             responses: dict[str, Sequence[str]], temperature: float, tie_margin: float,
             reference: str, seed: int) -> dict[str, dict]:
  """Elo ± standard error of each policy from the annotator's pairwise choices on the same rows
  (every pair of policies, every row, both tasks pooled), the reference at 0."""
  wins = gold_wins(world, contexts, families, responses, temperature, tie_margin, seed)
  return fit(list(responses), wins.sum(0), reference)


def pm_elo(pm_scores: dict[str, np.ndarray], reference: str) -> dict[str, dict]:
  """174 × (mean PM score − the reference's) on the same rows, with the paired SE."""
  ref = np.asarray(pm_scores[reference], np.float64)
  out = {}
  for n, s in pm_scores.items():
    d = np.asarray(s, np.float64) - ref
    m = mean_se(d)
    out[n] = {"elo": float(elo.pm_to_elo(m["mean"])),
              "se": float(elo.pm_to_elo(m["se"])) if n != reference else 0.0}
  return out


def pm_win_rate(pm_scores: dict[str, np.ndarray], reference: str) -> dict[str, dict]:
  """The PM's predicted probability that each policy's response beats the reference's on the
  same row, σ(r − r_ref) (Bradley–Terry, Bai et al. 2022, eq. 2.1), mean ± SE over rows."""
  ref = np.asarray(pm_scores[reference], np.float64)
  return {n: mean_se(1 / (1 + np.exp(ref - np.asarray(s, np.float64))))
          for n, s in pm_scores.items()}


def evaluate(world: W.World, world_cfg: dict, policies: dict[str, dict], families: Sequence[str],
             reference: str, seed: int, examples: int = 3, stride: int = 1) -> dict:
  """Metrics, gold Elo and PM-predicted Elo of policies that answered the same rows.

  ``policies``: name → {contexts [R], texts [R], length [R], finished [R], pm_scores
  {pm: [R]}, kl [R] or None}; rows aligned across policies (same prompt, same sample slot).
  ``examples`` rows ``stride`` apart (one per prompt when stride = samples per prompt) are kept
  with their gold scores.
  """
  names = list(policies)
  first = policies[names[0]]
  out = {"reference": reference, "rows": len(first["texts"]), "policies": {}}
  for n, p in policies.items():
    out["policies"][n] = policy_metrics(world, p["contexts"], p["texts"], families, p["length"],
                                        p["finished"], p.get("pm_scores"), p.get("kl"))
  if world is not None:
    wins = gold_wins(world, first["contexts"], families,
                     {n: p["texts"] for n, p in policies.items()}, world_cfg["temperature"],
                     world_cfg["tie_margin"], seed)
    fits = {"gold_elo": fit(names, wins.sum(0), reference)}
    fits |= {f"gold_elo/{t}": fit(names, wins[k], reference) for k, t in enumerate(TASKS)
             if wins[k].sum()}  # a task without comparisons has no Elo
    for key, f in fits.items():
      for n in names:
        out["policies"][n][key] = f[n]
  for pm in (first.get("pm_scores") or {}):
    scores = {n: p["pm_scores"][pm] for n, p in policies.items()}
    pe, wr = pm_elo(scores, reference), pm_win_rate(scores, reference)
    for n in names:
      out["policies"][n][f"pm_elo/{pm}"] = pe[n]
      out["policies"][n][f"pm_win_rate/{pm}"] = wr[n]

  def example(p, i):
    ex = {"context": p["contexts"][i][-300:], "response": p["texts"][i]}
    if world is not None:
      ex["gold"] = list(gold.scores(world, p["contexts"][i], " " + p["texts"][i]))
    return ex
  out["examples"] = {n: [example(p, i) for i in range(0, min(examples * stride, len(p["texts"])),
                                                      stride)]
                     for n, p in policies.items()}
  return out


def write(result: dict, out_dir: str, name: str = "evaluation", title: str = "") -> str:
  """``<name>.json`` and ``<name>.png`` (gold Elo and PM-predicted Elo; gold scores)."""
  path = os.path.join(out_dir, f"{name}.json")
  io.write_json(path, result)
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  pol = result["policies"]
  names = list(pol)
  x = np.arange(len(names))
  fig, axes = plt.subplots(1, 2, figsize=(11, 4))
  ax = axes[0]
  gold_known = "gold_elo" in pol[names[0]]
  if gold_known:
    ax.errorbar(x - 0.1, [pol[n]["gold_elo"]["elo"] for n in names],
                [pol[n]["gold_elo"]["se"] for n in names], fmt="o", label="gold Elo (annotator)")
  pm_keys = [k for k in pol[names[0]] if k.startswith("pm_elo/")]
  for k in pm_keys:
    ax.errorbar(x + 0.1, [pol[n][k]["elo"] for n in names], [pol[n][k]["se"] for n in names],
                fmt="s", label=f"PM-predicted ({k.split('/', 1)[1]})")
  ax.axhline(0, color="gray", lw=0.5)
  ax.set_xticks(x, names, rotation=20)
  ax.set_ylabel(f"Elo vs {result['reference']}")
  ax.legend(fontsize=8)
  ax = axes[1]
  panels = ((("gold_helpful", "helpfulness (helpful requests)"),
             ("gold_harmless", "harmlessness (harmful requests)"),
             ("gold_helpful_borderline", "helpfulness (borderline)")) if gold_known else
            tuple((k, f"PM score ({k.split('/', 1)[1]})") for k in pol[names[0]]
                  if k.startswith("pm_score/")))
  for k, label in panels:
    ax.errorbar(x, [pol[n][k]["mean"] for n in names], [pol[n][k]["se"] for n in names],
                fmt="o-", label=label)
  ax.set_xticks(x, names, rotation=20)
  ax.set_ylabel("mean gold score" if gold_known else "mean-removed PM score")
  ax.legend(fontsize=8)
  fig.suptitle(title or f"{result['rows']} samples per policy")
  fig.tight_layout()
  png = os.path.join(out_dir, f"{name}.png")
  io.write_figure(png, fig)  # whole or absent, like the JSON
  plt.close(fig)
  return path
