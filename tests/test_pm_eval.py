"""PM evaluation and Elo math against hand computations and simulations from known values."""
import numpy as np
import pytest

from hh import elo
from hh.pm import eval as pm_eval


def test_accuracy_by_hand():
  assert pm_eval.accuracy([1, 2, 3, 0], [0, 3, 1, 0]) == 0.5  # the tie counts as wrong


def test_calibration_by_hand():
  good = np.array([0.5, 0.2, 1.6, 1.5, 1.9])
  bad = np.array([0.0, 0.6, 0.0, 0.0, 0.0])
  cal = pm_eval.calibration(good, bad, n_bins=2, max_delta=2.0)  # bins [0,1), [1,2]
  # bin 0: |Δ| = 0.5 (right), 0.4 (wrong) → 1/2; bin 1: 1.6, 1.5, 1.9 all right → 1
  np.testing.assert_allclose(cal["accuracy"], [0.5, 1.0])
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  pred = [np.mean([sig(0.5), sig(0.4)]), np.mean([sig(1.6), sig(1.5), sig(1.9)])]
  np.testing.assert_allclose(cal["predicted"], pred)
  assert cal["ece"] == pytest.approx(2 / 5 * abs(0.5 - pred[0]) + 3 / 5 * abs(1.0 - pred[1]))


def test_calibrated_scores_have_small_ece_and_overconfident_ones_do_not():
  rng = np.random.default_rng(0)
  delta = rng.normal(0, 2, 100_000)  # the true log-odds that the first is preferred
  first_preferred = rng.random(delta.size) < 1 / (1 + np.exp(-delta))
  s1, s2 = delta, np.zeros_like(delta)
  good = np.where(first_preferred, s1, s2)
  bad = np.where(first_preferred, s2, s1)
  assert pm_eval.calibration(good, bad, 10, 6.0)["ece"] < 0.01
  assert pm_eval.calibration(3 * good, 3 * bad, 10, 6.0)["ece"] > 0.05  # overconfident PM


def test_accuracy_by_turns_and_threshold_by_hand():
  good = np.array([1.0, 2.0, 0.5, 3.0, 4.0])
  bad = np.array([0.0, 3.0, 0.4, 3.5, 1.0])
  turns = np.array([1, 1, 2, 7, 5])
  assert pm_eval.accuracy_by_turns(good, bad, turns) == {1: (0.5, 2), 2: (1.0, 1), 5: (0.5, 2)}
  out = pm_eval.threshold_accuracy(good, bad, [0.0, 0.45, 2.5])
  # > 0: pairs 2–5 (2 right) → 1/2; > 0.45: pairs 2, 4, 5 → 1/3; > 2.5: pair 4 only → 0
  assert out == [(0.0, 0.5, 4), (0.45, 1 / 3, 3), (2.5, 0.0, 1)]
  assert pm_eval.mean_removal_offset([1.0, 2.0, 6.0]) == 3.0


def test_elo_conversions():
  assert elo.ELO_PER_PM == pytest.approx(173.7, abs=0.05)  # "ΔElo ≈ 174·ΔPM"
  assert elo.win_rate(400.0, 0.0) == pytest.approx(10 / 11)
  assert elo.win_rate(0.0, 0.0) == 0.5
  assert elo.elo_from_win_rate(10 / 11) == pytest.approx(400.0)
  # a PM difference of Δ gives P = σ(Δ), the same as its Elo difference
  d = 0.8
  assert elo.win_rate(elo.pm_to_elo(d), 0.0) == pytest.approx(1 / (1 + np.exp(-d)))
  assert elo.elo_to_pm(elo.pm_to_elo(1.3)) == pytest.approx(1.3)


def test_fit_elo_recovers_known_ratings_with_honest_errors():
  true = np.array([0.0, 100.0, -150.0, 300.0])
  rng = np.random.default_rng(0)
  z = []
  for _ in range(40):
    wins = np.zeros((4, 4))
    for i in range(4):
      for j in range(i + 1, 4):
        n = 400
        w = rng.binomial(n, elo.win_rate(true[i], true[j]))
        wins[i, j], wins[j, i] = w, n - w
    fit, err = elo.fit_elo(wins)
    assert fit[0] == 0.0 and err[0] == 0.0
    z.append((fit[1:] - true[1:]) / err[1:])
  z = np.array(z)
  assert np.abs(z).max() < 4.5
  assert 0.7 < z.std() < 1.3  # the error bars match the scatter of the estimates


def test_test_report_by_hand():
  """Accuracy per test set, the mean-removal offset, the Bayes ceiling E[max(p, 1 − p)] and the
  shorter-response baseline, on 5 pairs in two sets computed by hand."""
  r = {"good": np.array([1.0, 0.0, 2.0, -1.0, 0.5]), "bad": np.array([0.0, 1.0, 1.0, 0.0, 0.5]),
       "part": np.array([0, 0, 0, 1, 1]), "index": np.arange(5)}
  p_chosen = np.array([0.9, 0.6, 0.3, 0.8, 0.5])
  chosen = ["a", "abc", "ab", "abcd", "x"]
  rejected = ["ab", "a", "abc", "ab", "y"]

  def extras(index, key):
    table = {"p_chosen": p_chosen, "chosen": chosen, "rejected": rejected}
    return [table[key][i] for i in index] if key != "p_chosen" else p_chosen[index]

  out = pm_eval.test_report(r, extras, ["helpful", "harmless"])
  assert out["accuracy"] == pytest.approx(2 / 5)  # pairs 0 and 2; the tie (4) is wrong
  assert out["offset"] == pytest.approx((2.5 + 2.5) / 10)  # Σ good = Σ bad = 2.5
  h, g = out["by_test_set"]["helpful"], out["by_test_set"]["harmless"]
  assert (h["accuracy"], h["pairs"], g["accuracy"], g["pairs"]) == (pytest.approx(2 / 3), 3,
                                                                     0.0, 2)
  assert h["bayes_ceiling"] == pytest.approx((0.9 + 0.6 + 0.7) / 3)
  assert g["bayes_ceiling"] == pytest.approx((0.8 + 0.5) / 2)
  assert h["fraction_of_ceiling"] == pytest.approx((2 / 3) / ((0.9 + 0.6 + 0.7) / 3))
  assert h["shorter_response_baseline"] == pytest.approx(2 / 3)  # a<ab, abc>a, ab<abc
  assert g["shorter_response_baseline"] == 0.0  # abcd>ab, x=y (a tie is wrong)
  no_gold = pm_eval.test_report(r, lambda i, k: None if k == "p_chosen" else extras(i, k),
                                ["helpful", "harmless"])
  assert "bayes_ceiling" not in no_gold["by_test_set"]["helpful"]


def test_elo_from_win_rate_inverts_win_rate_away_from_the_decade():
  for diff in (-250.0, -37.5, 123.0, 200.0):
    p = elo.win_rate(diff, 0.0)
    assert elo.elo_from_win_rate(p) == pytest.approx(diff)
  assert elo.elo_from_win_rate(0.76) == pytest.approx(400 * np.log10(0.76 / 0.24))


def _neg_loglik(r, wins):
  """−Σ_ij wins_ij · log σ(r_i − r_j), natural units (float64, by hand)."""
  d = r[:, None] - r[None, :]
  return float((wins * np.log1p(np.exp(-d))).sum())


def test_fit_elo_is_the_maximum_likelihood_with_the_inverse_hessian_errors():
  """Against an independent optimiser and a finite-difference Hessian of the negative
  log-likelihood (reference fixed at 0): the fit's ratings and standard errors, exactly."""
  import scipy.optimize
  wins = np.array([[0, 30, 12, 40], [20, 0, 9, 33], [25, 31, 0, 50], [10, 17, 8, 0]], float)
  fit, err = elo.fit_elo(wins, reference=1)
  free = [0, 2, 3]

  def f(x):
    r = np.insert(x, 1, 0.0)
    return _neg_loglik(r, wins)
  opt = scipy.optimize.minimize(f, np.zeros(3), method="BFGS", options={"gtol": 1e-10})
  want = np.insert(opt.x, 1, 0.0) * elo.ELO_PER_PM
  np.testing.assert_allclose(fit, want, atol=1e-3)
  assert fit[1] == 0.0 and err[1] == 0.0
  h, x0 = np.zeros((3, 3)), opt.x
  eps = 1e-4
  for i in range(3):
    for j in range(3):
      e_i, e_j = np.eye(3)[i] * eps, np.eye(3)[j] * eps
      h[i, j] = (f(x0 + e_i + e_j) - f(x0 + e_i - e_j) - f(x0 - e_i + e_j)
                 + f(x0 - e_i - e_j)) / (4 * eps**2)
  want_err = np.sqrt(np.diag(np.linalg.inv(h))) * elo.ELO_PER_PM
  np.testing.assert_allclose(err[free], want_err, rtol=1e-4)
  # two models: the textbook binomial error 1/sqrt(n·p·(1−p)) in natural units
  fit2, err2 = elo.fit_elo(np.array([[0, 70], [30, 0]], float))
  p = 0.7
  assert fit2[1] == pytest.approx(-elo.ELO_PER_PM * np.log(p / (1 - p)), rel=1e-6)
  assert err2[1] == pytest.approx(elo.ELO_PER_PM / np.sqrt(100 * p * (1 - p)), rel=1e-5)


def test_calibration_bins_by_hand_with_default_bins_and_an_empty_bin():
  """Default: 10 equal bins on [0, max |Δ|]; a tie (Δ = 0) counts as wrong; empty bins are NaN
  and left out of the ECE; a bin with one pair counts."""
  good = np.array([0.0, 0.05, 0.95, 0.3])
  bad = np.array([0.0, 0.0, 0.0, 0.0])          # |Δ| = 0 (tie), 0.05, 0.95, 0.3
  cal = pm_eval.calibration(good, bad)
  np.testing.assert_allclose(cal["edges"], np.linspace(0, 0.95, 11))
  np.testing.assert_allclose(cal["centers"], (np.linspace(0, 0.95, 11)[:-1] +
                                              np.linspace(0, 0.95, 11)[1:]) / 2)
  count = np.zeros(10)
  count[[0, 3, 9]] = [2, 1, 1]                 # {0, 0.05}, {0.3}, {0.95}
  np.testing.assert_array_equal(cal["count"], count)
  sig = lambda x: 1 / (1 + np.exp(-x))  # noqa: E731
  assert cal["accuracy"][0] == 0.5 and cal["accuracy"][3] == 1.0 and cal["accuracy"][9] == 1.0
  assert cal["predicted"][0] == pytest.approx((sig(0) + sig(0.05)) / 2)
  assert np.isnan(cal["accuracy"][1]) and np.isnan(cal["predicted"][5])
  ece = (2 * abs(0.5 - (sig(0) + sig(0.05)) / 2) + abs(1 - sig(0.3)) + abs(1 - sig(0.95))) / 4
  assert cal["ece"] == pytest.approx(ece)


def test_edge_cases_of_the_evaluations():
  assert np.isnan(pm_eval.accuracy([], []))
  # a score equal to the threshold is not above it
  good, bad = np.array([1.0, 2.0, 3.0]), np.array([1.5, 1.0, 0.5])
  at, below = pm_eval.threshold_accuracy(good, bad, [1.0, 0.9])
  assert at[2] == 0 and np.isnan(at[1])      # pairs 1 and 2 each have a score equal to 1.0
  assert below[1:] == (0.5, 2)               # above 0.9: pair 1 (wrong) and pair 2 (right)
  with pytest.raises(ValueError):
    pm_eval.shorter_response_baseline(["a", "b"], ["c"])
  r = {"good": np.array([1.0]), "bad": np.array([0.0]), "part": np.array([0]),
       "index": np.array([0])}
  rep = pm_eval.test_report(r, lambda i, k: None if k == "p_chosen" else ["x"], ["s"])
  assert rep["test_pairs"] == 1


def test_calibration_puts_differences_above_max_delta_in_the_last_bin():
  cal = pm_eval.calibration(np.array([5.0, 0.2]), np.array([0.0, 0.0]), n_bins=2, max_delta=2.0)
  np.testing.assert_array_equal(cal["count"], [1, 1])
  assert pm_eval.accuracy_by_turns([1.0], [0.0], [9], max_turns=5) == {5: (1.0, 1)}


def test_fit_elo_stays_finite_when_a_model_never_lost():
  """A perfect record has no finite MLE; the ridge keeps the fit finite, ordered and with
  finite errors (a ridge of the wrong sign diverges)."""
  wins = np.array([[0, 10, 10], [0, 0, 6], [0, 4, 0]], float)
  fit, err = elo.fit_elo(wins)
  assert np.isfinite(fit).all() and np.isfinite(err).all()
  assert fit[0] == 0.0 and fit[1] < 0 and fit[2] < 0 and fit[1] > fit[2]
