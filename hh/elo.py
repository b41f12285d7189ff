"""Elo ↔ win rate ↔ PM score differences, and the maximum-likelihood Elo fit (Bai et al. 2022, eq. 2.1).

A PM's scores are natural-log odds (P = σ(ΔPM)); Elo uses base-10 odds on a 400 scale, so
1 PM unit = 400/ln 10 ≈ 173.7 Elo ("ΔElo ≈ 174·ΔPM", Bai et al. 2022, eq. 2.1, App. B.5).
"""
from __future__ import annotations

import numpy as np

ELO_PER_PM = 400.0 / np.log(10.0)  # ≈ 173.72


def pm_to_elo(delta_pm):
  return np.asarray(delta_pm, np.float64) * ELO_PER_PM


def elo_to_pm(delta_elo):
  return np.asarray(delta_elo, np.float64) / ELO_PER_PM


def win_rate(elo_self, elo_opponent):
  """P(self beats opponent) = 1 / (1 + 10^((E_opp − E_self)/400))."""
  d = np.asarray(elo_opponent, np.float64) - np.asarray(elo_self, np.float64)
  return 1.0 / (1.0 + 10.0 ** (d / 400.0))


def elo_from_win_rate(p):
  """ΔElo (self − opponent) that gives win probability p."""
  p = np.asarray(p, np.float64)
  return 400.0 * np.log10(p / (1.0 - p))


def fit_elo(wins: np.ndarray, reference: int = 0, iters: int = 100,
            prior: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
  """Maximum-likelihood Elo from a win-count matrix, with standard errors (Bai et al. 2022, App. B.5).

  ``wins[i, j]`` = times model i beat model j ("unsure" comparisons already dropped). Maximises
  Σ_ij wins_ij · log σ(r_i − r_j) with r = E·ln10/400, by Newton's method, with model
  ``reference`` fixed at 0 (Elo is defined up to a shift) and a tiny ridge ``prior`` that only
  keeps the Hessian invertible. Errors are sqrt(diag(H⁻¹)) of the negative log-likelihood's
  Hessian, converted to Elo. Returns (elo [M], stderr [M]); the reference's error is 0.
  """
  wins = np.asarray(wins, np.float64)
  m = wins.shape[0]
  games = wins + wins.T
  free = np.array([i for i in range(m) if i != reference])
  r = np.zeros(m)
  for _ in range(iters):
    p = 1.0 / (1.0 + np.exp(-(r[:, None] - r[None, :])))  # P(i beats j)
    grad = (wins - games * p).sum(axis=1) - prior * r       # ∂ loglik / ∂ r_i
    w = games * p * (1 - p)
    hess = np.diag(w.sum(axis=1)) - w + prior * np.eye(m)   # −∂² loglik
    h, g = hess[np.ix_(free, free)], grad[free]
    step = np.linalg.solve(h, g)
    r[free] += step
    if np.max(np.abs(step)) < 1e-10:
      break
  p = 1.0 / (1.0 + np.exp(-(r[:, None] - r[None, :])))
  w = games * p * (1 - p)
  hess = (np.diag(w.sum(axis=1)) - w + prior * np.eye(m))[np.ix_(free, free)]
  err = np.zeros(m)
  err[free] = np.sqrt(np.diag(np.linalg.inv(hess)))
  return r * ELO_PER_PM, err * ELO_PER_PM
