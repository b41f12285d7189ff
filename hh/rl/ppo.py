"""PPO's math as small pure functions (SPEC §4.1): rewards, GAE, whitening, the clipped losses,
their statistics, and the adaptive KL controller.

Every array is over response tokens: B rows, N = max_new_tokens positions, ``mask`` [B, N] 1 on a
row's response (its turn-ending token included, ``hh/rl/sample.py``) and 0 after it. Log-probs
are at the sampling temperature. Statistics come as ``*_sum`` plus ``*_count`` over response
tokens (or rows), so they average correctly over minibatches, epochs and devices.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def last_token(mask: jax.Array) -> jax.Array:
  """One-hot [B, N] of each row's last response token (all zero for an empty response)."""
  m = mask.astype(jnp.float32)
  return m * (jnp.cumsum(m, axis=-1) == m.sum(-1, keepdims=True))


def token_rewards(logp: jax.Array, logp_ref: jax.Array, mask: jax.Array, score: jax.Array,
                  kl_coef: jax.Array, finished: jax.Array | None = None,
                  eot_penalty: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Per-token rewards [B, N] and the per-token KL estimate [B, N] (SPEC §4.1):

    kl_t = (log π(y_t) − log π0(y_t)) · m_t
    r_t  = −λ_KL · kl_t  +  [t = last] · (score − eot_penalty · [row did not end its turn])

  ``score`` [B]: the PM's mean-removed score of the response; ``kl_coef``: λ_KL (an array, so a
  new value does not retrace); ``finished`` [B]: the row ended its turn within N tokens.
  """
  m = mask.astype(jnp.float32)
  kl = (logp - logp_ref) * m
  end = score.astype(jnp.float32)
  if finished is not None and eot_penalty:
    end = end - eot_penalty * (1.0 - finished.astype(jnp.float32))
  return -kl_coef * kl + last_token(m) * end[:, None], kl


def gae(rewards: jax.Array, values: jax.Array, mask: jax.Array, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
  """Generalised advantage estimation as a reverse scan over N: (advantages, returns) [B, N].

    δ_t = r_t + γ · V_{t+1} · m_{t+1} − V_t
    A_t = δ_t + γλ · A_{t+1} · m_{t+1}            (A = 0 past the response: the episode ends)
    R_t = A_t + V_t

  Zero outside the mask.
  """
  m = mask.astype(jnp.float32)
  r, v = rewards.astype(jnp.float32) * m, values.astype(jnp.float32) * m
  v_next = jnp.pad(v[:, 1:] * m[:, 1:], ((0, 0), (0, 1)))
  m_next = jnp.pad(m[:, 1:], ((0, 0), (0, 1)))
  delta = (r + gamma * v_next - v) * m

  def step(a_next, x):
    d, mn = x
    a = d + gamma * lam * a_next * mn
    return a, a

  _, adv = jax.lax.scan(step, jnp.zeros(r.shape[0], jnp.float32),
                        (delta.T, m_next.T), reverse=True)
  adv = adv.T * m
  return adv, (adv + v) * m


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  m = mask.astype(jnp.float32)
  return (x * m).sum() / jnp.maximum(m.sum(), 1.0)


def whiten(x: jax.Array, mask: jax.Array, shift_mean: bool = True, eps: float = 1e-8) -> jax.Array:
  """(x − mean) / std over the masked entries (population variance); zero outside the mask.
  ``shift_mean=False`` keeps the mean (for rewards)."""
  m = mask.astype(jnp.float32)
  mean = masked_mean(x, m)
  var = masked_mean(jnp.square(x - mean), m)
  out = (x - mean) * jax.lax.rsqrt(var + eps)
  return (out if shift_mean else out + mean) * m


def policy_loss(logp: jax.Array, logp_old: jax.Array, advantages: jax.Array, mask: jax.Array,
                clip_eps: float = 0.2) -> dict:
  """The clipped surrogate (Schulman et al. 2017) and its statistics, as sums + counts:

    ρ_t = exp(log π − log π_old)
    L_t = max(−A_t · ρ_t, −A_t · clip(ρ_t, 1 − ε, 1 + ε))
    approx_kl_t = ½ (log π − log π_old)²; clipfrac_t = [the clipped term is the larger]
  """
  m = mask.astype(jnp.float32)
  log_ratio = (logp - logp_old) * m
  ratio = jnp.exp(log_ratio)
  unclipped = -advantages * ratio
  clipped = -advantages * jnp.clip(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
  loss = jnp.maximum(unclipped, clipped)
  n = m.sum()
  return {"pg_loss_sum": (loss * m).sum(), "pg_loss_count": n,
          "approx_kl_sum": (0.5 * jnp.square(log_ratio) * m).sum(), "approx_kl_count": n,
          "clipfrac_sum": ((clipped > unclipped).astype(jnp.float32) * m).sum(),
          "clipfrac_count": n,
          "ratio_sum": (ratio * m).sum(), "ratio_count": n,
          "ratio_max": jnp.max(jnp.where(m > 0, ratio, 0.0))}


def value_loss(values: jax.Array, values_old: jax.Array, returns: jax.Array, mask: jax.Array,
               clip_range: float = 0.2) -> dict:
  """The clipped value loss as sums + counts:

    V_clip = V_old + clip(V − V_old, −c, c)
    L_t = ½ · max((V − R)², (V_clip − R)²)
  """
  m = mask.astype(jnp.float32)
  v_clip = values_old + jnp.clip(values - values_old, -clip_range, clip_range)
  loss = 0.5 * jnp.maximum(jnp.square(values - returns), jnp.square(v_clip - returns))
  n = m.sum()
  return {"vf_loss_sum": (loss * m).sum(), "vf_loss_count": n,
          "vf_clipfrac_sum": ((jnp.square(v_clip - returns) > jnp.square(values - returns))
                              .astype(jnp.float32) * m).sum(), "vf_clipfrac_count": n}


def entropy(logits: jax.Array, mask: jax.Array) -> dict:
  """Entropy of the policy at each response position, logits [B, N, V]: sum + count."""
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  h = -(jnp.exp(lp) * lp).sum(-1)
  m = mask.astype(jnp.float32)
  return {"entropy_sum": (h * m).sum(), "entropy_count": m.sum()}


def explained_variance(values: jax.Array, returns: jax.Array, mask: jax.Array) -> jax.Array:
  """1 − Var[R − V] / Var[R] over the masked entries (1: the values predict the returns)."""
  m = mask.astype(jnp.float32)
  var_r = masked_mean(jnp.square(returns - masked_mean(returns, m)), m)
  diff = returns - values
  var_d = masked_mean(jnp.square(diff - masked_mean(diff, m)), m)
  return 1.0 - var_d / jnp.maximum(var_r, 1e-8)


def adaptive_kl_coef(coef: jax.Array, kl: jax.Array, n_steps: int, target: float,
                     horizon: float) -> jax.Array:
  """Ziegler et al. (2019)'s proportional controller: after a batch of ``n_steps`` rollouts whose
  mean summed KL is ``kl``,

    e = clip(kl / target − 1, −0.2, 0.2);   λ ← λ · (1 + e · n_steps / horizon)

  (a scalar array: its value lives in the checkpoint)."""
  error = jnp.clip(kl / target - 1.0, -0.2, 0.2)
  return coef * (1.0 + error * n_steps / horizon)
