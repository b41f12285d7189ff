"""Agreement metrics against published worked examples and hand calculations; aggregations
against simulated labellers whose reliability is known (hh/agreement.py)."""
import numpy as np
import pytest

from hh import agreement as ag

X = ag.MISSING


def test_cohens_kappa_by_hand():
  """50 items: both yes 20, yes/no 5, no/yes 10, both no 15 → p_o = 0.7, p_e = 0.5·0.6 + 0.5·0.4
  = 0.5, κ = 0.4."""
  a = np.array([1] * 25 + [0] * 25)
  b = np.array([1] * 20 + [0] * 5 + [1] * 10 + [0] * 15)
  assert ag.cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)
  assert ag.cohen_kappa(a, a) == pytest.approx(1.0)
  # missing entries are left out of both
  assert ag.cohen_kappa(np.append(a, X), np.append(b, 1)) == pytest.approx(0.4, abs=1e-12)


def test_fleiss_kappa_on_the_published_example():
  """Fleiss (1971)'s form on the worked example of 10 items × 14 raters × 5 categories
  (P̄ = 0.378, P_e = 0.213, κ = 0.210)."""
  counts = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
            [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
  labels = np.array([[c for c, n in enumerate(row) for _ in range(n)] for row in counts])
  assert ag.fleiss_kappa(labels) == pytest.approx(0.2099, abs=5e-4)
  with pytest.raises(ValueError, match="same number"):
    ag.fleiss_kappa(np.array([[0, 1, X], [1, 1, 1]]))


def test_krippendorffs_alpha_on_the_published_example():
  """Krippendorff (2011)'s reliability data: 4 observers, 12 units, missing values; nominal
  α = 0.743."""
  data = np.array([[1, 2, 3, 3, 2, 1, 4, 1, 2, X, X, X],
                   [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, X, 3],
                   [X, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, X],
                   [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, X]]).T   # [units, observers]
  assert ag.krippendorff_alpha(data) == pytest.approx(0.743, abs=5e-4)
  # two observers, complete binary data: α = 1 − (n − 1)·(disagreements) / (expected), by hand
  a = np.array([[1, 1], [1, 0], [0, 0], [0, 0]])
  # coincidences: o_11 = 2, o_00 = 4, o_01 = o_10 = 1; n = 8, n_1 = 3, n_0 = 5
  d_o, d_e = 2 / 8, (64 - 9 - 25) / (8 * 7)
  assert ag.krippendorff_alpha(a) == pytest.approx(1 - d_o / d_e, abs=1e-12)


def _pool(n_items, labellers, rng):
  """Items with a true preference, labels from labellers each correct with probability q (an
  adversary has q < 0.5), some missing."""
  truth = rng.random(n_items) < 0.5
  labels = np.full((n_items, len(labellers)), X)
  for j, q in enumerate(labellers):
    correct = rng.random(n_items) < q
    said = np.where(correct, truth, ~truth).astype(int)
    present = rng.random(n_items) < 0.8
    labels[:, j] = np.where(present, said, X)
  return truth, labels


def test_majority_is_the_share_of_a_votes():
  labels = np.array([[1, 1, 0], [0, X, X], [1, 0, X], [X, X, X]])
  np.testing.assert_allclose(ag.majority(labels), [2 / 3, 0.0, 0.5, 0.5])


def test_dawid_skene_recovers_the_labellers_and_beats_the_majority_with_an_adversary():
  rng = np.random.default_rng(0)
  qs = [0.9, 0.75, 0.6, 0.1, 0.1]  # two adversaries
  truth, labels = _pool(3000, qs, rng)
  p, conf = ag.dawid_skene(labels)
  for j, q in enumerate(qs):  # P(says A | A) and P(says B | B) both ≈ q
    assert conf[j, 1, 1] == pytest.approx(q, abs=0.04)
    assert conf[j, 0, 0] == pytest.approx(q, abs=0.04)
  acc = lambda prob: np.mean((prob > 0.5) == truth)  # noqa: E731
  assert acc(p) > acc(ag.majority(labels)) + 0.05
  assert acc(p) > 0.93


def test_noisy_bradley_terry_ranks_the_labellers_by_reliability():
  rng = np.random.default_rng(1)
  qs = [0.95, 0.8, 0.6, 0.2]
  truth, labels = _pool(3000, qs, rng)
  p, beta = ag.noisy_bradley_terry(labels)
  assert beta[0] > beta[1] > beta[2] > 0 > beta[3]  # the adversary counts against
  assert np.mean((p > 0.5) == truth) > np.mean((ag.majority(labels) > 0.5) == truth)
  # one reliable labeller alone: the aggregate is that labeller's vote
  one = labels[:, :1]
  seen = one[:, 0] != X
  np.testing.assert_array_equal(ag.noisy_bradley_terry(one)[0][seen] > 0.5, one[seen, 0] == 1)


def test_simulated_labellers_follow_their_kind():
  """Each kind's agreement with the better gold score, against its formula; the pool's mix."""
  from hh.sim import labellers as L
  rng = np.random.default_rng(2)
  n, t = 100_000, 0.5  # SE of an agreement ≤ 0.0016: the 0.01 tolerances are > 6 SE
  s_a, s_b = rng.normal(size=n), rng.normal(size=n)
  len_a, len_b = rng.integers(10, 200, n), rng.integers(10, 200, n)
  better = s_a > s_b

  def agree(kind):
    return np.mean(L.judge(L.Labeller(kind), s_a, s_b, len_a, len_b, t, rng) == better)
  p = 1 / (1 + np.exp(-np.abs(s_a - s_b) / t))  # the careful labeller's P(right) per pair
  assert agree("careful") == pytest.approx(p.mean(), abs=0.01)
  assert agree("adversarial") == pytest.approx(1 - p.mean(), abs=0.01)
  assert agree("careless") == pytest.approx(0.5 * 0.5 + 0.5 * p.mean(), abs=0.01)
  p_noisy = 1 / (1 + np.exp(-np.abs(s_a - s_b) / (4 * t)))
  assert agree("noisy") == pytest.approx(p_noisy.mean(), abs=0.01)
  says_longer = L.judge(L.Labeller("length"), s_a, s_a, len_a, len_b, t, rng)  # equal gold
  d = len_a != len_b
  p_long = 1 / (1 + np.exp(-2.0 * np.abs(len_a - len_b)[d] / 100))
  assert np.mean(says_longer[d] == (len_a > len_b)[d]) == pytest.approx(p_long.mean(), abs=0.01)
  assert [w.kind for w in L.pool(0.3)] == ["noisy", "length", "careless"] + ["careful"] * 7
  m = L.label_matrix(L.pool(0.5), 3, s_a[:500], s_b[:500], len_a[:500], len_b[:500], t, rng)
  assert ((m != ag.MISSING).sum(1) == 3).all() and set(np.unique(m)) == {ag.MISSING, 0, 1}
  with pytest.raises(ValueError, match="must be in"):
    L.pool(1.5)
