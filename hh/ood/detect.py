"""OOD detectors on activations, pure float64 numpy (Bai et al. 2022, §5.4, App. B.9).

Shapes: x [N, D] activations of N prompts at one layer; scores [N], higher = more out of
distribution.

* Gaussian fit on in-distribution activations: mean μ and full covariance Σ with 1/N (no class
  structure, following Ren et al. 2021, as the paper does).
* Mahalanobis: (x − μ)ᵀ Σ⁻¹ (x − μ), by a Cholesky solve (never an explicit inverse).
* SRMD (simplified relative Mahalanobis distance): Mahalanobis − (x − μ)ᵀ diag(Σ)⁻¹ (x − μ).
* Ridge: when Σ is singular (N ≤ D, or collinear activations) the fit refuses unless a ridge
  r > 0 is given, which adds r · mean(diag Σ) to Σ's diagonal (scale-free: r = 1e-3 is 0.1% of
  the average variance). Both distances then use the ridged Σ.
* Outlier exposure (Bai et al. 2022, Fig. 23): a logistic-regression classifier on the frozen activations,
  class 0 = the N in-distribution prompts, class 1 = ⌊N/M⌋ copies of each of M harmful examples;
  the copies enter as a weight of ⌊N/M⌋ per example, the same full-batch loss. Its logit (the
  class-1 output before the monotone sigmoid) is the score.
* AUROC: exact, the Mann–Whitney U statistic with tied scores counted half.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.special
import scipy.stats


@dataclasses.dataclass(frozen=True)
class Gaussian:
  """In-distribution statistics: ``mean`` [D], ``chol`` [D, D] the lower Cholesky factor of the
  (ridged) covariance, ``var`` [D] its diagonal."""
  mean: np.ndarray
  chol: np.ndarray
  var: np.ndarray
  ridge: float = 0.0


def _as_2d(x, what: str = "activations") -> np.ndarray:
  x = np.asarray(x, np.float64)
  if x.ndim != 2:
    raise ValueError(f"{what}: expected [N, D], got shape {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError(f"{what}: non-finite values")
  return x


def covariance(x) -> tuple[np.ndarray, np.ndarray]:
  """(μ [D], Σ [D, D]) with the 1/N normalisation of Bai et al. 2022, §5.4."""
  x = _as_2d(x)
  mean = x.mean(0)
  xc = x - mean
  return mean, xc.T @ xc / len(x)


def fit_gaussian(x, ridge: float = 0.0, key: str = "ridge") -> Gaussian:
  """The Gaussian of ``x`` [N, D]; a singular Σ without a ridge is an error naming ``key``."""
  x = _as_2d(x, "in-distribution activations")
  n, d = x.shape
  if ridge < 0:
    raise ValueError(f"{key}={ridge}: must be ≥ 0")
  if n < 2:
    raise ValueError(f"{n} in-distribution example(s): at least 2 are needed for a covariance")
  if ridge == 0 and n <= d:
    raise ValueError(f"{n} in-distribution examples in {d} dimensions: the covariance (1/N) has "
                     f"rank ≤ {n - 1} < {d}, singular; give more than {d} examples or set "
                     f"{key} > 0 (added to the diagonal × the mean variance)")
  mean, cov = covariance(x)
  scale = float(np.trace(cov)) / d
  if ridge > 0:
    cov = cov + ridge * scale * np.eye(d)
  try:
    chol = np.linalg.cholesky(cov)
  except np.linalg.LinAlgError:
    chol = None
  # A factor whose smallest pivot is ~1e-7 of the typical scale is singular in float64 terms.
  if chol is None or np.min(np.diag(chol)) ** 2 < 1e-14 * max(scale, 1e-300):
    raise ValueError(f"the in-distribution covariance ({n} examples, {d} dimensions) is "
                     f"singular (collinear activations); set {key} > 0, e.g. 1e-3")
  return Gaussian(mean=mean, chol=chol, var=np.diag(cov).copy(), ridge=float(ridge))


def mahalanobis(g: Gaussian, x) -> np.ndarray:
  """(x − μ)ᵀ Σ⁻¹ (x − μ) for each row of ``x`` [N, D] → [N]."""
  xc = _as_2d(x) - g.mean
  z = scipy.linalg.solve_triangular(g.chol, xc.T, lower=True)        # [D, N] = L⁻¹ (x − μ)
  return (z * z).sum(0)


def diagonal_mahalanobis(g: Gaussian, x) -> np.ndarray:
  """(x − μ)ᵀ diag(Σ)⁻¹ (x − μ) → [N]."""
  xc = _as_2d(x) - g.mean
  return (xc * xc / g.var).sum(1)


def srmd(g: Gaussian, x) -> np.ndarray:
  """Simplified relative Mahalanobis distance (Bai et al. 2022, §5.4): Mahalanobis − its diagonal form → [N]."""
  return mahalanobis(g, x) - diagonal_mahalanobis(g, x)


@dataclasses.dataclass(frozen=True)
class Linear:
  """Outlier-exposure classifier: logit = ((x − mean) / scale) · w + b."""
  mean: np.ndarray
  scale: np.ndarray
  w: np.ndarray
  b: float


def fit_exposure(x_in, x_out, l2: float = 1e-2, max_iter: int = 500) -> Linear:
  """Logistic regression of class 1 (``x_out`` [M, D], each weighted ⌊N/M⌋) against class 0
  (``x_in`` [N, D]) on features standardised by the in-distribution mean and std.

  Loss: Σᵢ wᵢ · log(1 + exp(−yᵢ sᵢ)) / Σᵢ wᵢ + l2/2 · |w|² with y ∈ {−1, +1}, s the logit.
  ``l2`` > 0 keeps the minimum finite: M harmful examples in D > M dimensions are always
  separable. Minimised by L-BFGS in float64 (a convex problem: one optimum).
  """
  x_in, x_out = _as_2d(x_in, "in-distribution activations"), _as_2d(x_out, "exposure activations")
  n, m = len(x_in), len(x_out)
  if m < 1 or n < m:
    raise ValueError(f"outlier exposure needs 1 ≤ M ≤ N harmful examples (got M={m}, N={n})")
  if l2 <= 0:
    raise ValueError(f"l2={l2}: must be > 0 (the exposure set is separable)")
  mean, scale = x_in.mean(0), x_in.std(0) + 1e-6
  z = (np.concatenate([x_in, x_out]) - mean) / scale                   # [N + M, D]
  y = np.concatenate([-np.ones(n), np.ones(m)])
  wt = np.concatenate([np.ones(n), np.full(m, float(n // m))])
  wt = wt / wt.sum()
  d = z.shape[1]

  def loss_and_grad(theta):
    w, b = theta[:d], theta[d]
    s = z @ w + b
    margin = -y * s
    loss = (wt * np.logaddexp(0.0, margin)).sum() + 0.5 * l2 * (w @ w)
    dl_ds = wt * (-y) * scipy.special.expit(margin)                      # ∂/∂s of log(1+e^(−ys))
    return loss, np.concatenate([z.T @ dl_ds + l2 * w, [dl_ds.sum()]])

  res = scipy.optimize.minimize(loss_and_grad, np.zeros(d + 1), jac=True, method="L-BFGS-B",
                                options={"maxiter": max_iter, "gtol": 1e-9})
  return Linear(mean=mean, scale=scale, w=res.x[:d], b=float(res.x[d]))


def exposure_score(lin: Linear, x) -> np.ndarray:
  """The classifier's class-1 logit for each row of ``x`` [N, D] → [N]."""
  return ((_as_2d(x) - lin.mean) / lin.scale) @ lin.w + lin.b


def auroc(in_scores, out_scores) -> float:
  """P(score of an OOD example > an in-distribution one) + ½ P(tie): the Mann–Whitney U over
  n_in · n_out, from average ranks (exact, O(n log n))."""
  a, b = np.asarray(in_scores, np.float64), np.asarray(out_scores, np.float64)
  if a.size == 0 or b.size == 0:
    raise ValueError(f"AUROC needs both classes (got {a.size} in-distribution, {b.size} OOD)")
  ranks = scipy.stats.rankdata(np.concatenate([a, b]))                 # ties: average rank
  u = ranks[a.size:].sum() - b.size * (b.size + 1) / 2
  return float(u / (a.size * b.size))


def threshold_at_fpr(in_scores, fpr: float) -> float:
  """The score above which at most a fraction ``fpr`` of ``in_scores`` (held-out
  in-distribution) lies: flag = score > threshold."""
  if not 0 < fpr < 1:
    raise ValueError(f"fpr={fpr}: must be in (0, 1)")
  s = np.sort(np.asarray(in_scores, np.float64))
  if s.size == 0:
    raise ValueError("no held-out in-distribution scores to set the threshold on")
  k = int(np.ceil((1 - fpr) * s.size)) - 1                             # ≥ (1 − fpr)·n at or below
  return float(s[min(max(k, 0), s.size - 1)])
