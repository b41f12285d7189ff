"""Best-of-N's KL axis against an exact computation, and the CD loss against float64."""
import jax.numpy as jnp
import numpy as np
import pytest

from hh.cd import step as distill
from hh.policy import best_of_n


def test_kl_bound_against_the_exact_kl_of_a_categorical_policy():
  """log N − (N−1)/N is the continuous-score value; on a categorical policy with few outcomes
  the exact KL is below it, by a gap that shrinks as the support grows."""
  assert best_of_n.kl_bound(1) == 0.0
  assert best_of_n.kl_bound(4) == pytest.approx(np.log(4) - 0.75)
  rng = np.random.default_rng(0)
  gaps = {}
  for size in (5, 50, 5000):
    p = rng.dirichlet(np.ones(size))
    reward = rng.permutation(size).astype(float)
    for n in (2, 4, 16, 64):
      exact = best_of_n.exact_kl(p, reward, n)
      assert exact <= best_of_n.kl_bound(n) + 1e-9
      gaps[size, n] = best_of_n.kl_bound(n) - exact
  assert gaps[5, 16] > 0.3            # 5 outcomes: far below the bound at N = 16 …
  assert gaps[5000, 16] < 0.02        # … 5,000: within 0.02 nats of it
  # the exact formula by brute force for N = 2 on three outcomes
  p, r = np.array([0.5, 0.3, 0.2]), np.array([0.0, 2.0, 1.0])
  q = np.array([0.25, 1 - 0.7**2, 0.7**2 - 0.25])  # P(best = i): F(r_i)^2 − F(r_i⁻)^2
  assert best_of_n.exact_kl(p, r, 2) == pytest.approx(float(np.sum(q * np.log(q / p))))
  np.testing.assert_array_equal(best_of_n.pick(np.array([[0.1, 0.5, 0.5], [2.0, -1, 0]])),
                                [1, 0])
  with pytest.raises(ValueError, match="N ≥ 1"):
    best_of_n.kl_bound(0)


def _reference_kl(tl, sl, k):
  """float64: top-k of the teacher as themselves, the rest as one bucket."""
  def lsm(x):
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))
  p, q = np.exp(lsm(tl)), np.exp(lsm(sl))
  out = np.zeros(tl.shape[:-1])
  for idx in np.ndindex(*tl.shape[:-1]):
    top = np.argsort(-p[idx])[:k]
    rest = np.setdiff1d(np.arange(tl.shape[-1]), top)
    pr, qr = p[idx][rest].sum(), q[idx][rest].sum()
    out[idx] = (p[idx][top] * np.log(p[idx][top] / q[idx][top])).sum() + pr * np.log(pr / qr)
  return out


def test_cd_loss_is_the_51_way_kl_in_float64():
  rng = np.random.default_rng(1)
  tl, sl = rng.normal(size=(2, 3, 120)) * 3, rng.normal(size=(2, 3, 120)) * 3
  got = distill.topk_bucket_kl(jnp.asarray(tl, jnp.float32), jnp.asarray(sl, jnp.float32), 50)
  np.testing.assert_allclose(got, _reference_kl(tl, sl, 50), rtol=1e-4, atol=1e-6)
  assert float(distill.topk_bucket_kl(jnp.asarray(tl), jnp.asarray(tl), 50).max()) < 1e-6
  w = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  m = distill.distill_loss(jnp.asarray(tl), jnp.asarray(sl), jnp.asarray(w), 50)
  ref = _reference_kl(tl, sl, 50)
  assert float(m["loss_sum"]) == pytest.approx((ref * w).sum(), rel=1e-4)
  assert float(m["loss_count"]) == 3.0


def test_cd_defaults_to_the_papers_top_50_and_with_all_tokens_kept_is_the_full_kl():
  """k = 50 unless told (Bai et al. 2022, App. A.1): the default gives the 51-way KL, which here
  differs from the 52-way one; with k = V no bucket is left and the KL is the whole KL."""
  rng = np.random.default_rng(2)
  tl, sl = rng.normal(size=(2, 3, 120)), rng.normal(size=(2, 3, 120))  # mass outside the top
  t, s = jnp.asarray(tl, jnp.float32), jnp.asarray(sl, jnp.float32)
  ref50, ref51 = _reference_kl(tl, sl, 50), _reference_kl(tl, sl, 51)
  assert (np.abs(ref50 - ref51) / ref50).max() > 1e-3  # well beyond the tolerance below
  np.testing.assert_allclose(distill.topk_bucket_kl(t, s), ref50, rtol=1e-4, atol=1e-6)
  assert distill.teacher_topk(t)[1].shape == (2, 3, 50)
  w = jnp.ones((2, 3))
  assert float(distill.distill_loss(t, s, w)["loss_sum"]) == pytest.approx(ref50.sum(), rel=1e-4)
  p = np.exp(tl - tl.max(-1, keepdims=True))
  p /= p.sum(-1, keepdims=True)
  q = np.exp(sl - sl.max(-1, keepdims=True))
  q /= q.sum(-1, keepdims=True)
  full = (p * np.log(p / q)).sum(-1)
  np.testing.assert_allclose(distill.topk_bucket_kl(t, s, 120), full, rtol=1e-4, atol=1e-6)
