"""A simulated crowdworker: Bradley–Terry choices on gold scores, with "unsure" ties dropped.

Under a task's gold score s (helpfulness for the helpful task, harmlessness for red-team), the
annotator prefers A over B with probability P = σ((s_A − s_B) / T) [Bai et al. 2022, eq. 4.2 with a
temperature]. Pairs with |s_A − s_B| < ``tie_margin`` get an "unsure" answer and are dropped,
like the paper's weakest slider setting (Bai et al. 2022, §3.1).

Ceilings: a predictor that always picks the higher gold score agrees with the noisy labels with
probability max(P, 1 − P) per pair; its mean over a set of pairs is the Bayes-optimal accuracy
that no PM can beat in expectation. Two independent annotators agree with probability
P² + (1 − P)² (the paper measured ≈ 63% between researchers and crowdworkers, Bai et al. 2022, eq. 2.1).
"""
from __future__ import annotations

import numpy as np


def prefer_probability(s_a: np.ndarray, s_b: np.ndarray, temperature: float) -> np.ndarray:
  """P(A preferred over B) = σ((s_A − s_B)/T), float64."""
  d = (np.asarray(s_a, np.float64) - np.asarray(s_b, np.float64)) / temperature
  return 1.0 / (1.0 + np.exp(-d))


def annotate(s_a: np.ndarray, s_b: np.ndarray, temperature: float, tie_margin: float,
             rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  """(a_preferred [N] bool, kept [N] bool): noisy choices; unsure pairs are not kept."""
  p = prefer_probability(s_a, s_b, temperature)
  choice = rng.random(p.shape) < p
  kept = np.abs(np.asarray(s_a) - np.asarray(s_b)) >= tie_margin
  return choice, kept


def bayes_ceiling(s_a: np.ndarray, s_b: np.ndarray, temperature: float) -> float:
  """Expected accuracy of the best possible predictor on these pairs: mean max(P, 1 − P)."""
  p = prefer_probability(s_a, s_b, temperature)
  return float(np.mean(np.maximum(p, 1 - p))) if p.size else float("nan")


def inter_annotator_agreement(s_a: np.ndarray, s_b: np.ndarray, temperature: float) -> float:
  """Expected agreement of two independent annotators: mean P² + (1 − P)²."""
  p = prefer_probability(s_a, s_b, temperature)
  return float(np.mean(p**2 + (1 - p) ** 2)) if p.size else float("nan")
