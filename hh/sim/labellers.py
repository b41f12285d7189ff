"""A pool of simulated labellers of different reliability and bias, on the world's gold scores.

Each labeller judges a pair (A, B) under the task's gold score s like the world's annotator
(hh/sim/annotator.py: P(A) = σ((s_A − s_B) / T)), changed by its kind:

* ``careful``: the annotator itself;
* ``noisy``: a temperature ``noisy_factor`` times higher (closer to a coin);
* ``length``: prefers the longer response, P(A) = σ((s_A − s_B) / T + w · (len_A − len_B) / 100)
  with lengths in characters (a bias the paper's crowdworkers were asked to avoid);
* ``careless``: a coin flip on a fraction ``careless`` of the pairs, the annotator on the rest;
* ``adversarial``: the annotator on −s (it prefers the worse response).

``pool(noise)`` is ten labellers of whom round(10 · noise) are unreliable (the four unreliable
kinds in turn), the rest careful; ``label_matrix`` asks k of them, drawn per pair, for each pair
→ hh/agreement.py's [pairs, labellers] matrix with −1 where a labeller was not asked.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from hh.agreement import MISSING

UNRELIABLE = ("noisy", "length", "careless", "adversarial")


@dataclasses.dataclass(frozen=True)
class Labeller:
  kind: str                   # careful | noisy | length | careless | adversarial
  noisy_factor: float = 4.0
  length_weight: float = 2.0  # logits per 100 characters of length difference
  careless: float = 0.5       # the share of pairs answered by a coin


def pool(noise: float, size: int = 10) -> list[Labeller]:
  """``size`` labellers, ``round(size · noise)`` of them unreliable (kinds in turn)."""
  if not 0 <= noise <= 1:
    raise ValueError(f"noise={noise}: the share of unreliable labellers must be in [0, 1]")
  bad = int(round(size * noise))
  return [Labeller(UNRELIABLE[j % len(UNRELIABLE)]) for j in range(bad)] + \
      [Labeller("careful")] * (size - bad)


def prefer_a(who: Labeller, s_a, s_b, len_a, len_b, temperature: float) -> np.ndarray:
  """P(``who`` prefers A) [N], float64, before any coin of carelessness."""
  d = (np.asarray(s_a, np.float64) - np.asarray(s_b, np.float64)) / temperature
  if who.kind == "noisy":
    d = d / who.noisy_factor
  elif who.kind == "length":
    d = d + who.length_weight * (np.asarray(len_a, np.float64) - np.asarray(len_b)) / 100
  elif who.kind == "adversarial":
    d = -d
  elif who.kind not in ("careful", "careless"):
    raise ValueError(f"labeller kind {who.kind!r}; allowed: careful, {', '.join(UNRELIABLE)}")
  return 1 / (1 + np.exp(-d))


def judge(who: Labeller, s_a, s_b, len_a, len_b, temperature: float,
          rng: np.random.Generator) -> np.ndarray:
  """``who``'s choices [N] bool (True: A)."""
  p = prefer_a(who, s_a, s_b, len_a, len_b, temperature)
  if who.kind == "careless":
    p = np.where(rng.random(p.shape) < who.careless, 0.5, p)
  return rng.random(p.shape) < p


def label_matrix(labellers: list[Labeller], k: int, s_a, s_b, len_a, len_b, temperature: float,
                 rng: np.random.Generator) -> np.ndarray:
  """[N, len(labellers)] int: k labellers per pair, drawn without replacement, 1 = A, 0 = B,
  MISSING where not asked."""
  n, j = len(s_a), len(labellers)
  if not 1 <= k <= j:
    raise ValueError(f"k={k} labels per pair from a pool of {j}")
  asked = np.argsort(rng.random((n, j)), 1)[:, :k]                  # [N, k]
  out = np.full((n, j), MISSING, np.int64)
  for c, who in enumerate(labellers):
    rows = np.flatnonzero((asked == c).any(1))
    said = judge(who, np.asarray(s_a)[rows], np.asarray(s_b)[rows], np.asarray(len_a)[rows],
                 np.asarray(len_b)[rows], temperature, rng)
    out[rows, c] = said.astype(np.int64)
  return out
