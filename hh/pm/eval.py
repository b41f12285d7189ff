"""PM evaluations as pure functions of scores (Bai et al. 2022, §3.2–3.4): float64 numpy in, numbers out.

Inputs are per-pair arrays: ``good`` / ``bad`` [N] the scores of the preferred and the other
response (after mean removal where it matters), ``turns`` [N] the number of Human turns.
"""
from __future__ import annotations

import numpy as np


def accuracy(good: np.ndarray, bad: np.ndarray) -> float:
  """Fraction of pairs with r(good) > r(bad) (ties count as wrong)."""
  good, bad = np.asarray(good, np.float64), np.asarray(bad, np.float64)
  return float(np.mean(good > bad)) if good.size else float("nan")


def calibration(good: np.ndarray, bad: np.ndarray, n_bins: int = 10,
                max_delta: float | None = None) -> dict[str, np.ndarray | float]:
  """Accuracy binned by |Δ| = |r_good − r_bad| against the model's own claim σ(|Δ|) (Fig. 9).

  In each bin: ``accuracy`` = fraction of pairs where the higher-scored response was the
  preferred one, ``predicted`` = mean σ(|Δ|) of the bin's pairs, ``count``. The expected
  calibration error is Σ_b (n_b/N)·|accuracy_b − predicted_b|. Bins are equal-width on
  [0, max_delta] (default: the largest |Δ|); empty bins are NaN and do not count.
  """
  good, bad = np.asarray(good, np.float64), np.asarray(bad, np.float64)
  delta = good - bad
  mag = np.abs(delta)
  top = float(max_delta if max_delta is not None else max(mag.max(initial=0.0), 1e-12))
  edges = np.linspace(0.0, top, n_bins + 1)
  idx = np.digitize(mag, edges[1:-1])  # 0 … n_bins − 1 (above max_delta: the last bin)
  right = (delta > 0).astype(np.float64)  # the higher-scored response was preferred
  conf = 1.0 / (1.0 + np.exp(-mag))
  count = np.bincount(idx, minlength=n_bins).astype(np.float64)
  with np.errstate(invalid="ignore", divide="ignore"):
    acc = np.bincount(idx, right, minlength=n_bins) / count
    pred = np.bincount(idx, conf, minlength=n_bins) / count
  filled = count > 0
  ece = float(np.sum(count[filled] / count.sum() * np.abs(acc[filled] - pred[filled])))
  return {"edges": edges, "centers": (edges[:-1] + edges[1:]) / 2, "accuracy": acc,
          "predicted": pred, "count": count, "ece": ece}


def accuracy_by_turns(good, bad, turns, max_turns: int = 5) -> dict[int, tuple[float, int]]:
  """{n: (accuracy, count)} for n = 1 … max_turns − 1, and ``max_turns`` meaning ≥ max_turns."""
  turns = np.minimum(np.asarray(turns), max_turns)
  good, bad = np.asarray(good, np.float64), np.asarray(bad, np.float64)
  return {int(t): (accuracy(good[turns == t], bad[turns == t]), int((turns == t).sum()))
          for t in np.unique(turns)}


def threshold_accuracy(good, bad, thresholds) -> list[tuple[float, float, int]]:
  """[(threshold, accuracy, count)] over pairs whose two scores both exceed the threshold
  (scores after mean removal; Bai et al. 2022, Fig. 25)."""
  good, bad = np.asarray(good, np.float64), np.asarray(bad, np.float64)
  out = []
  for th in thresholds:
    keep = (good > th) & (bad > th)
    out.append((float(th), accuracy(good[keep], bad[keep]), int(keep.sum())))
  return out


def mean_removal_offset(scores: np.ndarray) -> float:
  """The constant subtracted from a PM's scores: their mean on a held-out set (Bai et al. 2022, §3.1)."""
  return float(np.mean(np.asarray(scores, np.float64)))


def test_report(r: dict, extras, test_specs) -> dict:
  """A PM's final evaluation from its raw test scores ``r`` (``score.score_pairs``).

  ``extras(index, key)`` returns a per-pair field of the test source for the given indices, or
  None when the source has none (``p_chosen``: the annotator's probability on synthetic data).
  Per test set: accuracy, pair count, the "prefer the shorter response" baseline, and where the
  annotator is known the Bayes ceiling E[max(p, 1 − p)] and the fraction of it reached. The
  mean-removal offset is the mean raw score over all test responses (Bai et al. 2022, §3.1).
  """
  result = {"accuracy": accuracy(r["good"], r["bad"]),
            "offset": mean_removal_offset(np.concatenate([r["good"], r["bad"]])),
            "test_pairs": int(len(r["good"])), "by_test_set": {}}
  for p, spec in enumerate(test_specs):
    sel = r["part"] == p
    entry = {"accuracy": accuracy(r["good"][sel], r["bad"][sel]), "pairs": int(sel.sum())}
    p_chosen = extras(r["index"][sel], "p_chosen")
    if p_chosen is not None:  # synthetic: the annotator's Bayes ceiling on these very pairs
      ceiling = float(np.mean(np.maximum(p_chosen, 1 - p_chosen)))
      entry |= {"bayes_ceiling": ceiling, "fraction_of_ceiling": entry["accuracy"] / ceiling}
    chosen, rejected = extras(r["index"][sel], "chosen"), extras(r["index"][sel], "rejected")
    entry["shorter_response_baseline"] = shorter_response_baseline(chosen, rejected)
    result["by_test_set"][spec] = entry
  return result


def shorter_response_baseline(chosen, rejected) -> float:
  """Accuracy of "prefer the shorter response" (by characters; ties count as wrong)."""
  return float(np.mean([len(c) < len(j) for c, j in zip(chosen, rejected, strict=True)]))
