"""Agreement between labellers and aggregation of their labels (float64 numpy).

Labels are a matrix ``L`` [items, labellers] of category indices, with ``-1`` where a labeller did
not label an item. For comparisons the categories are 0 ("B preferred") and 1 ("A preferred").

Agreement: Cohen's κ (two labellers; Cohen 1960), Fleiss' κ (a fixed number of labels per item;
Fleiss 1971), Krippendorff's α (nominal, any number of labels per item, missing allowed;
Krippendorff 2011, "Computing Krippendorff's alpha-reliability").

Aggregation → P(A preferred) per item [items]:
* ``majority``: the share of "A" votes (ties 0.5);
* ``dawid_skene``: each labeller's 2 × 2 confusion matrix and the class prior by EM from the
  majority vote (Dawid & Skene 1979) — a labeller who mostly flips gets a flipped matrix and so
  counts with the sign turned;
* ``noisy_bradley_terry``: P(labeller j says A on item i) = σ(β_j · d_i) with a latent margin
  d_i per item and a reliability β_j per labeller (negative: adversarial), fitted as the
  posterior mode under N(0, 1) priors on d and N(1, 1) on β (the sign is fixed by taking the
  majority of the β's positive), by alternating Newton steps.
"""
from __future__ import annotations

import numpy as np

MISSING = -1


def _check(labels: np.ndarray) -> np.ndarray:
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"labels: expected [items, labellers], got shape {labels.shape}")
  return labels.astype(np.int64)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
  """κ = (p_o − p_e) / (1 − p_e) of two labellers over the items both labelled."""
  a, b = np.asarray(a), np.asarray(b)
  both = (a != MISSING) & (b != MISSING)
  a, b = a[both], b[both]
  cats = np.union1d(a, b)
  p_o = np.mean(a == b)
  p_e = sum(np.mean(a == c) * np.mean(b == c) for c in cats)
  return float((p_o - p_e) / (1 - p_e)) if p_e < 1 else float("nan")


def fleiss_kappa(labels: np.ndarray) -> float:
  """Fleiss' κ for items that each have the same number n ≥ 2 of labels (missing entries
  ignored; every item must keep n)."""
  labels = _check(labels)
  cats = np.unique(labels[labels != MISSING])
  counts = np.stack([(labels == c).sum(1) for c in cats], 1).astype(np.float64)  # [N, K]
  n = counts.sum(1)
  if len(np.unique(n)) != 1 or n[0] < 2:
    raise ValueError("fleiss_kappa: every item needs the same number (≥ 2) of labels")
  n = n[0]
  p_i = ((counts * (counts - 1)).sum(1)) / (n * (n - 1))
  p_j = counts.sum(0) / counts.sum()
  p_bar, p_e = p_i.mean(), (p_j ** 2).sum()
  return float((p_bar - p_e) / (1 - p_e)) if p_e < 1 else float("nan")


def krippendorff_alpha(labels: np.ndarray) -> float:
  """Nominal α = 1 − D_o / D_e from the coincidence matrix; items with fewer than two labels
  are left out."""
  labels = _check(labels)
  cats = np.unique(labels[labels != MISSING])
  k = {c: i for i, c in enumerate(cats)}
  o = np.zeros((len(cats), len(cats)))
  for row in labels:
    vals = row[row != MISSING]
    m = len(vals)
    if m < 2:
      continue
    cnt = np.bincount([k[v] for v in vals], minlength=len(cats)).astype(np.float64)
    o += (np.outer(cnt, cnt) - np.diag(cnt)) / (m - 1)
  n_c = o.sum(1)
  n = n_c.sum()
  if n <= 1:
    return float("nan")
  d_o = (n - np.trace(o)) / n
  d_e = (n * n - (n_c ** 2).sum()) / (n * (n - 1))
  return float(1 - d_o / d_e) if d_e > 0 else float("nan")


def majority(labels: np.ndarray) -> np.ndarray:
  """P(A) [items]: the share of A votes among an item's labels (0.5 with none)."""
  labels = _check(labels)
  seen = (labels != MISSING).sum(1)
  return np.where(seen > 0, (labels == 1).sum(1) / np.maximum(seen, 1), 0.5)


def dawid_skene(labels: np.ndarray, iterations: int = 100, smoothing: float = 0.01
                ) -> tuple[np.ndarray, np.ndarray]:
  """(P(A) [items], confusion [labellers, 2 (true), 2 (said)]) for binary labels, by EM."""
  labels = _check(labels)
  seen = labels != MISSING
  said = [(labels == c) & seen for c in (0, 1)]                  # [N, J] each
  t = majority(labels)                                           # P(true = A) per item
  for _ in range(iterations):
    post = np.stack([1 - t, t], 1)                               # [N, 2]
    conf = np.stack([np.stack([post[:, k] @ said[c] for c in (0, 1)], 1)
                     for k in (0, 1)], 1) + smoothing            # [J, 2, 2]
    conf /= conf.sum(2, keepdims=True)
    prior = post.mean(0)
    log_p = np.log(prior)[None, :] + np.stack(
        [sum(said[c] @ np.log(conf[:, k, c]) for c in (0, 1)) for k in (0, 1)], 1)
    log_p -= log_p.max(1, keepdims=True)
    p = np.exp(log_p)
    new = p[:, 1] / p.sum(1)
    if np.max(np.abs(new - t)) < 1e-10:
      t = new
      break
    t = new
  return t, conf


def noisy_bradley_terry(labels: np.ndarray, iterations: int = 200
                        ) -> tuple[np.ndarray, np.ndarray]:
  """(P(A) = σ(d) [items], reliability β [labellers]) maximising
  Σ log σ(y_ij β_j d_i) − ½ Σ d_i² − ½ Σ (β_j − 1)² (y = ±1) by alternating Newton steps: given
  β the objective is concave in d with a diagonal Hessian, and given d in β (float64). The
  N(1, 1) prior on β keeps one labeller from taking over (without it the joint maximum puts a
  few labellers' β far above the rest's even when all are alike)."""
  labels = _check(labels)
  seen = (labels != MISSING).astype(np.float64)
  y = np.where(labels == 1, 1.0, -1.0) * seen                     # ±1, 0 where missing
  d = 2 * majority(labels) - 1                                    # start at the majority margin
  beta = np.ones(labels.shape[1])

  def grad_curv(z):  # ∂/∂z log σ(z) and −∂²/∂z², masked
    s = 1 / (1 + np.exp(-z))
    return (1 - s) * seen, s * (1 - s) * seen
  for _ in range(iterations):
    g, h = grad_curv(y * d[:, None] * beta[None, :])
    d = d + ((y * g) @ beta - d) / (h @ beta ** 2 + 1)
    g, h = grad_curv(y * d[:, None] * beta[None, :])
    step = ((y * g).T @ d - (beta - 1)) / (h.T @ d ** 2 + 1)
    beta = beta + step
    if np.max(np.abs(step)) < 1e-9:
      break
  if np.sum(beta > 0) < np.sum(beta < 0):  # the likelihood is symmetric under (d, β) → (−d, −β)
    d, beta = -d, -beta
  return 1 / (1 + np.exp(-d)), beta


AGGREGATIONS = {"majority": majority,
                "dawid_skene": lambda labels: dawid_skene(labels)[0],
                "noisy_bt": lambda labels: noisy_bradley_terry(labels)[0]}
