"""Best-of-N rejection sampling's pure pieces (Bai et al. 2022, §4.3): the pick, and its KL from the policy.

Sampling N responses and keeping the one a PM scores highest defines a new policy whose KL from
the sampling policy is at most log N − (N − 1)/N (nats): the paper's x-axis for best-of-N. For a
continuous score distribution it is exact; with ties or a discrete support it is an upper bound
(``tests/test_best_of_n.py`` measures by how much on a small categorical distribution).
"""
from __future__ import annotations

import numpy as np


def kl_bound(n) -> np.ndarray:
  """log N − (N − 1)/N: the KL (nats) of best-of-N from the sampling policy, for N ≥ 1."""
  n = np.asarray(n, np.float64)
  if np.any(n < 1):
    raise ValueError(f"N={n}; best-of-N needs N ≥ 1")
  return np.log(n) - (n - 1) / n


def pick(scores: np.ndarray) -> np.ndarray:
  """Index [P] of the best of each prompt's N samples, scores [P, N] (the first of ties)."""
  scores = np.asarray(scores)
  if scores.ndim != 2 or scores.shape[1] < 1:
    raise ValueError(f"scores of shape {scores.shape}; expected [prompts, N ≥ 1]")
  return np.argmax(scores, axis=1)


def exact_kl(p: np.ndarray, reward: np.ndarray, n: int) -> float:
  """KL(best-of-N ‖ p) in nats for a categorical policy ``p`` over outcomes with distinct
  ``reward``s: the best of N draws is outcome i with probability F(r_i)^N − F(r_i⁻)^N."""
  order = np.argsort(reward)
  p_sorted = np.asarray(p, np.float64)[order]
  cdf = np.cumsum(p_sorted)
  below = np.concatenate([[0.0], cdf[:-1]])
  q = cdf**n - below**n
  keep = q > 0
  return float(np.sum(q[keep] * np.log(q[keep] / p_sorted[keep])))
