"""PPO's math as small pure functions (Bai et al. 2022, §4.1): rewards, GAE, whitening, the clipped losses,
their statistics, and the adaptive KL controller.

Every array is over response tokens: B rows, N = max_new_tokens positions, ``mask`` [B, N] 1 on a
row's response (its turn-ending token included, ``hh/policy/sample.py``) and 0 after it. Log-probs
are at the sampling temperature. Statistics come as ``*_sum`` plus ``*_count`` over response
tokens (or rows), so they average correctly over minibatches, epochs and devices.
"""
from __future__ import annotations

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hh.models import ScalarHead, head
from hh.train.state import TrainState


def last_token(mask: jax.Array) -> jax.Array:
  """One-hot [B, N] of each row's last response token (all zero for an empty response)."""
  m = mask.astype(jnp.float32)
  return m * (jnp.cumsum(m, axis=-1) == m.sum(-1, keepdims=True))


def token_rewards(logp: jax.Array, logp_ref: jax.Array, mask: jax.Array, score: jax.Array,
                  kl_coef: jax.Array, finished: jax.Array | None = None,
                  eot_penalty: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Per-token rewards [B, N] and the per-token KL estimate [B, N] (Bai et al. 2022, §4.1):

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


def token_entropy(logits: jax.Array) -> jax.Array:
  """Entropy of softmax(logits) at each position: logits [B, N, V] → [B, N] float32."""
  lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -(jnp.exp(lp) * lp).sum(-1)


def entropy(logits: jax.Array, mask: jax.Array) -> dict:
  """Entropy of the policy at each response position, logits [B, N, V]: sum + count."""
  return entropy_sums(token_entropy(logits), mask)


def entropy_sums(h: jax.Array, mask: jax.Array) -> dict:
  """Per-position entropies [B, N] summed over the response (``mask``) + their count."""
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


def next_kl_coef(coef: jax.Array, kl: jax.Array, n_steps: int, target: float | None,
                 horizon: float) -> jax.Array:
  """λ_KL for the next iteration: the paper's fixed λ when ``target`` is None (Bai et al. 2022,
  §4.1), else ``adaptive_kl_coef`` towards a mean summed KL of ``target`` nats."""
  return coef if target is None else adaptive_kl_coef(coef, kl, n_steps, target, horizon)


# ---------------------------------------------------------------------------------------------
# The update: K epochs × minibatches of one rollout inside one jit.

@flax.struct.dataclass
class PPOState:
  """PPO iterations done (``step``), policy and value each with its own params and optimizer
  state, and the KL coefficient (an array: checkpointed, and a new value does not retrace)."""
  step: jax.Array
  policy: TrainState
  value: TrainState
  kl_coef: jax.Array


def at_response(model, params, tokens: jax.Array, mask: jax.Array, n: int) -> jax.Array:
  """The model's head on the positions that predict the last ``n`` tokens of ``tokens``
  [B, P + N] (the response), positions from the mask: logits [B, N, V] for a DecoderLM (the LM
  head never runs on the prompt), values V(state before token t) [B, N] for a ValueModel."""
  def fn(m, t, k):
    return m.head(m.trunk(t, k)[:, -n - 1:-1])
  return model.apply({"params": params}, tokens, mask, method=fn)


def response_outputs(policy_model, value_model, params: tuple, tokens: jax.Array,
                     mask: jax.Array, n: int, temperature: float = 1.0
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(log-probs of the response tokens at ``temperature`` [B, N], the policy's entropy [B, N],
  values [B, N]) at the response positions, ``params`` = (policy, value); the LM head in chunks
  (``head.per_position``: no [B, N, V] logits kept for the backward).

  ``value_model``: a ValueModel with its own trunk (two forward passes), or None for a scalar
  head on the policy's own trunk (value params ``{"head": ...}``, one pass: the value loss then
  trains the shared trunk too, scaled by ``vf_coef``)."""
  pol_params, val_params = params
  hidden = _trunk_at_response(policy_model, pol_params, tokens, mask, n)
  if value_model is not None:
    values = at_response(value_model, val_params, tokens, mask, n)
  else:
    values = _shared_values(policy_model, val_params, hidden)
  logp, h = _policy_head(policy_model, pol_params, hidden, tokens[:, -n:], temperature)
  return logp, h, values


def response_log_probs(model, params, tokens: jax.Array, mask: jax.Array, n: int,
                       temperature: float = 1.0) -> jax.Array:
  """log π(response token | context) at ``temperature`` [B, N] (π0's, the policy's), the head in
  chunks."""
  hidden = _trunk_at_response(model, params, tokens, mask, n)
  return _policy_head(model, params, hidden, tokens[:, -n:], temperature)[0]


def _policy_head(model, params, hidden: jax.Array, targets: jax.Array, temperature: float):
  """(``token_log_probs``, ``token_entropy``) [B, N] of the LM head on ``hidden`` [B, N, D]."""
  w = model.apply({"params": params}, method="head_kernel")

  def stats(logits, t):
    return (token_log_probs(logits, t, temperature),
            token_entropy(jax.lax.stop_gradient(logits)))
  return head.per_position(stats, hidden.astype(model.cfg.dtype), w, targets)


def _trunk_at_response(model, params, tokens: jax.Array, mask: jax.Array, n: int) -> jax.Array:
  """The trunk's states [B, N, D] at the positions that predict the last ``n`` tokens."""
  return model.apply({"params": params}, tokens, mask,
                     method=lambda m, t, k: m.trunk(t, k)[:, -n - 1:-1])


def _shared_values(policy_model, val_params: dict, hidden: jax.Array) -> jax.Array:
  return ScalarHead(policy_model.cfg).apply({"params": val_params["head"]}, hidden)


def response_values(policy_model, value_model, params: tuple, tokens: jax.Array,
                    mask: jax.Array, n: int) -> jax.Array:
  """Values [B, N] at the response positions (``response_outputs``'s, without the LM head)."""
  pol_params, val_params = params
  if value_model is not None:
    return at_response(value_model, val_params, tokens, mask, n)
  return _shared_values(policy_model, val_params,
                        _trunk_at_response(policy_model, pol_params, tokens, mask, n))


def token_log_probs(logits: jax.Array, targets: jax.Array, temperature: float = 1.0) -> jax.Array:
  """log softmax(logits / T)[target] [B, N]; T > 0 (the sampler's temperature)."""
  if not temperature > 0:
    raise ValueError(f"temperature={temperature}: log-probs need a temperature > 0")
  lp = jax.nn.log_softmax(logits.astype(jnp.float32) / temperature, axis=-1)
  return jnp.take_along_axis(lp, targets[..., None], axis=-1)[..., 0]


def make_ppo_update(policy_model, value_model, policy_tx: optax.GradientTransformation,
                    value_tx: optax.GradientTransformation, *, epochs: int, minibatches: int,
                    clip_eps: float = 0.2, vf_clip: float = 0.2, vf_coef: float = 1.0,
                    temperature: float = 1.0, axis_rules=()):
  """``(state, rollout) -> (state, metrics)``: ``epochs`` passes over the rollout in
  ``minibatches`` shuffled minibatches, each one optimizer step of the policy (clipped surrogate)
  and of the value (clipped value loss), all inside one jit (``lax.scan``). ``value_model``
  None: the value is a scalar head on the policy's trunk (``response_outputs``).

  ``rollout``: tokens, mask [B, P + N] (prompt left-padded, then the response); resp_mask,
  logp_old, values_old, advantages, returns [B, N] — frozen at rollout time (advantages
  whitened here over the whole rollout). Metrics are sums + counts over every minibatch step.
  """
  def losses(params, mb):
    pol_params, val_params = params
    n = mb["resp_mask"].shape[1]
    logp, h, values = response_outputs(policy_model, value_model, (pol_params, val_params),
                                       mb["tokens"], mb["mask"], n, temperature)
    pg = policy_loss(logp, mb["logp_old"], mb["advantages"], mb["resp_mask"], clip_eps)
    vf = value_loss(values, mb["values_old"], mb["returns"], mb["resp_mask"], vf_clip)
    count = jnp.maximum(pg["pg_loss_count"], 1.0)
    loss = (pg["pg_loss_sum"] + vf_coef * vf["vf_loss_sum"]) / count
    return loss, {**pg, **vf, **entropy_sums(jax.lax.stop_gradient(h), mb["resp_mask"])}

  def minibatch_step(state: PPOState, mb):
    with nn.logical_axis_rules(axis_rules):
      grads, metrics = jax.grad(losses, has_aux=True)((state.policy.params, state.value.params),
                                                       mb)
    new = []
    for ts, tx, g in ((state.policy, policy_tx, grads[0]), (state.value, value_tx, grads[1])):
      updates, opt_state = tx.update(g, ts.opt_state, ts.params)
      new.append(ts.replace(step=ts.step + 1, params=optax.apply_updates(ts.params, updates),
                            opt_state=opt_state))
    ratio_max = metrics.pop("ratio_max")
    return state.replace(policy=new[0], value=new[1]), (metrics, ratio_max)

  def update(state: PPOState, rollout: dict):
    rollout = {**rollout, "advantages": whiten(rollout["advantages"], rollout["resp_mask"])}
    b = rollout["tokens"].shape[0]
    if b % minibatches:
      raise ValueError(f"a rollout of {b} rows does not split into {minibatches} minibatches")
    size = b // minibatches
    keys = jax.random.split(jax.random.fold_in(state.policy.rng, state.policy.step), epochs)

    def epoch(state, key):
      perm = jax.random.permutation(key, b)
      mbs = jax.tree.map(lambda x: x[perm].reshape(minibatches, size, *x.shape[1:]), rollout)
      return jax.lax.scan(minibatch_step, state, mbs)

    state, (metrics, ratio_max) = jax.lax.scan(epoch, state, keys)
    out = jax.tree.map(jnp.sum, metrics)
    out["ratio_max"] = jnp.max(ratio_max)
    out["first_minibatch_ratio_sum"] = metrics["ratio_sum"][0, 0]
    out["first_minibatch_ratio_count"] = metrics["ratio_count"][0, 0]
    out["loss_sum"] = out["pg_loss_sum"] + vf_coef * out["vf_loss_sum"]
    out["loss_count"] = out["pg_loss_count"]
    return state.replace(step=state.step + 1), out

  return update
