"""PPO's math against float64 references and hand computations (hh/ppo/step.py): a flipped sign,
a dropped mask or a wrong axis in any of them fails here."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hh.ppo import step as ppo

RNG = np.random.default_rng(0)
LENGTHS = np.array([7, 3, 1, 5])
MASK = (np.arange(7)[None] < LENGTHS[:, None]).astype(np.float32)


def _gae_loop(r, v, lengths, gamma, lam):
  """The textbook recursion in float64, one row at a time, over the response only."""
  adv = np.zeros_like(r, np.float64)
  for b, n in enumerate(lengths):
    a_next = 0.0
    for t in reversed(range(n)):
      v_next = v[b, t + 1] if t + 1 < n else 0.0
      delta = r[b, t] + gamma * v_next - v[b, t]
      a_next = delta + gamma * lam * a_next
      adv[b, t] = a_next
  return adv, (adv + v) * (np.arange(r.shape[1])[None] < lengths[:, None])


@pytest.mark.parametrize("gamma,lam", [(1.0, 0.95), (0.9, 0.5), (1.0, 1.0)])
def test_gae_against_a_float64_loop(gamma, lam):
  r = RNG.normal(size=MASK.shape) * MASK
  v = RNG.normal(size=MASK.shape)                      # garbage past the response: must not leak
  adv, ret = ppo.gae(jnp.asarray(r, jnp.float32), jnp.asarray(v, jnp.float32),
                     jnp.asarray(MASK), gamma, lam)
  want_adv, want_ret = _gae_loop(r, v, LENGTHS, gamma, lam)
  np.testing.assert_allclose(np.asarray(adv), want_adv, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ret), want_ret, atol=1e-5)


def test_token_rewards_by_hand():
  """Row 0: 3 tokens, finished; row 1: 2 tokens, not finished (penalised)."""
  mask = jnp.array([[1, 1, 1, 0], [1, 1, 0, 0]], jnp.float32)
  logp = jnp.array([[-1.0, -2.0, -0.5, -9.0], [-0.1, -0.3, -9.0, -9.0]])
  ref = jnp.array([[-1.5, -1.0, -0.5, 0.0], [-0.2, -0.1, 0.0, 0.0]])
  r, kl = ppo.token_rewards(logp, ref, mask, jnp.array([2.0, -1.0]), jnp.float32(0.1),
                            finished=jnp.array([True, False]), eot_penalty=0.5)
  np.testing.assert_allclose(np.asarray(kl), [[0.5, -1.0, 0.0, 0.0], [0.1, -0.2, 0.0, 0.0]],
                             atol=1e-6)
  np.testing.assert_allclose(np.asarray(r), [[-0.05, 0.1, 2.0, 0.0],
                                             [-0.01, 0.02 - 1.0 - 0.5, 0.0, 0.0]], atol=1e-6)
  np.testing.assert_array_equal(np.asarray(ppo.last_token(mask)), [[0, 0, 1, 0], [0, 1, 0, 0]])


def test_whiten_over_the_mask_only():
  x = RNG.normal(size=MASK.shape) * 3 + 2
  x_far = np.where(MASK > 0, x, 1e6)  # values past the response must not change anything
  w = np.asarray(ppo.whiten(jnp.asarray(x_far, jnp.float32), jnp.asarray(MASK)))
  sel = MASK > 0
  ref = (x[sel] - x[sel].mean()) / x[sel].std()
  np.testing.assert_allclose(w[sel], ref, rtol=1e-4, atol=1e-5)
  assert (w[~sel] == 0).all()
  keep = np.asarray(ppo.whiten(jnp.asarray(x, jnp.float32), jnp.asarray(MASK), shift_mean=False))
  np.testing.assert_allclose(keep[sel], ref + x[sel].mean(), rtol=1e-4, atol=1e-4)


def test_policy_loss_by_hand():
  """Three tokens, ε = 0.2: ratio e^0.5 with A = +1 is clipped (loss −1.2); ratio e^−0.5 with
  A = +1 is not (−0.6065); ratio e^0.5 with A = −2 is not (+3.2974); a masked fourth is ignored."""
  new = jnp.array([[0.5, -0.5, 0.5, 5.0]])
  old = jnp.zeros((1, 4))
  adv = jnp.array([[1.0, 1.0, -2.0, 100.0]])
  mask = jnp.array([[1, 1, 1, 0]], jnp.float32)
  out = ppo.policy_loss(new, old, adv, mask, 0.2)
  e = np.exp(0.5)
  want = [-1.2, -np.exp(-0.5), 2 * e]
  assert float(out["pg_loss_sum"]) == pytest.approx(sum(want), rel=1e-5)
  assert float(out["pg_loss_count"]) == 3
  assert float(out["clipfrac_sum"]) == 1.0
  assert float(out["approx_kl_sum"]) == pytest.approx(3 * 0.5 * 0.25)
  assert float(out["ratio_max"]) == pytest.approx(e, rel=1e-6)
  assert float(out["ratio_sum"]) == pytest.approx(2 * e + np.exp(-0.5), rel=1e-6)


def test_policy_gradient_raises_the_log_prob_of_a_positive_advantage():
  """The sign convention: descending the loss raises log π where A > 0 and lowers it where
  A < 0 (unclipped at ratio 1)."""
  grad = jax.grad(lambda lp: ppo.policy_loss(lp, jnp.zeros(3)[None], jnp.array([[1.0, -1.0, 0.0]]),
                                             jnp.ones((1, 3)))["pg_loss_sum"])(jnp.zeros((1, 3)))
  np.testing.assert_allclose(np.asarray(grad), [[-1.0, 1.0, 0.0]], atol=1e-6)


def test_value_loss_by_hand():
  """c = 0.2: V moved +0.5 from V_old = 0 toward R = 1 → V_clip = 0.2, loss ½·max(0.25, 0.64) =
  0.32 (clipped); V = 0.1 toward R = −1 → unclipped ½·1.21 = 0.605."""
  out = ppo.value_loss(jnp.array([[0.5, 0.1]]), jnp.zeros((1, 2)), jnp.array([[1.0, -1.0]]),
                       jnp.ones((1, 2)), 0.2)
  assert float(out["vf_loss_sum"]) == pytest.approx(0.32 + 0.605, rel=1e-5)
  assert float(out["vf_clipfrac_sum"]) == 1.0


def test_explained_variance():
  ret = jnp.asarray(RNG.normal(size=MASK.shape), jnp.float32)
  m = jnp.asarray(MASK)
  assert float(ppo.explained_variance(ret, ret, m)) == pytest.approx(1.0)
  mean = ppo.masked_mean(ret, m)
  assert float(ppo.explained_variance(jnp.full_like(ret, mean), ret, m)) == pytest.approx(0.0,
                                                                                          abs=1e-5)


def test_entropy_against_numpy():
  logits = RNG.normal(size=(2, 3, 5))
  mask = np.array([[1, 1, 0], [1, 0, 0]], np.float32)
  p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
  h = -(p * np.log(p)).sum(-1)
  out = ppo.entropy(jnp.asarray(logits, jnp.float32), jnp.asarray(mask))
  assert float(out["entropy_sum"]) == pytest.approx((h * mask).sum(), rel=1e-5)
  assert float(out["entropy_count"]) == 3


@pytest.mark.parametrize("kl,want_error", [(6.0, 0.2), (4.5, -0.1), (0.0, -0.2)])
def test_adaptive_kl_controller(kl, want_error):
  """Target 5, horizon 10,000, 256 rollouts: λ ← λ·(1 + clip(kl/5 − 1, ±0.2)·256/10,000)."""
  new = ppo.adaptive_kl_coef(jnp.float32(0.1), jnp.float32(kl), 256, 5.0, 10_000.0)
  assert float(new) == pytest.approx(0.1 * (1 + want_error * 256 / 10_000), rel=1e-6)


def test_kl_coefficient_is_fixed_without_a_target_and_moves_towards_one():
  """No target: the paper's fixed λ. A target: λ rises when the KL is above it (a stronger pull
  back to π0) and falls when below, by the controller's step."""
  coef = jnp.float32(0.01)
  assert ppo.next_kl_coef(coef, jnp.float32(9.0), 64, None, 10_000.0) is coef
  up = float(ppo.next_kl_coef(coef, jnp.float32(9.0), 64, 6.0, 10_000.0))
  down = float(ppo.next_kl_coef(coef, jnp.float32(3.0), 64, 6.0, 10_000.0))
  assert up == pytest.approx(0.01 * (1 + 0.2 * 64 / 10_000), rel=1e-6)
  assert down == pytest.approx(0.01 * (1 - 0.2 * 64 / 10_000), rel=1e-6)


# The jitted update on a tiny model: invariants and a toy task with a known optimum.

from flax import linen as nn  # noqa: E402
from test_model import CFG, left_padded_batch  # noqa: E402

from hh.models import DecoderLM, ValueModel  # noqa: E402
from hh.policy import sample as sample_lib  # noqa: E402
from hh.train.state import TrainState  # noqa: E402

POLICY, VALUE = DecoderLM(CFG), ValueModel(CFG)


def _state(lr=3e-3, seed=0, shared=False, tx=None):
  """A PPO state of the tiny policy; the value a ValueModel of its own, or (``shared``) a random
  scalar head on the policy's trunk."""
  tok = jnp.zeros((1, 4), jnp.int32)
  pp = nn.unbox(POLICY.init(jax.random.key(seed), tok, tok))["params"]
  vp = nn.unbox(VALUE.init(jax.random.key(seed + 1), tok, tok))["params"]
  if shared:
    k1, k2 = jax.random.split(jax.random.key(seed + 2))
    vp = {"head": {"kernel": 0.1 * jax.random.normal(k1, (CFG.d_model,)),
                   "bias": 0.1 * jax.random.normal(k2, ())}}
  tx = tx or optax.adam(lr)
  mk = lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p, opt_state=tx.init(p),  # noqa: E731
                            rng=jax.random.PRNGKey(seed))
  return ppo.PPOState(step=jnp.zeros((), jnp.int32), policy=mk(pp), value=mk(vp),
                      kl_coef=jnp.float32(0.0)), tx


def test_response_logits_are_the_full_forwards_at_the_response_positions():
  """Left-padded rows: the head on the last N positions equals the full forward's logits that
  predict those tokens."""
  state, _ = _state()
  tokens, mask = left_padded_batch([9, 5], 9, seed=7)
  full = POLICY.apply({"params": state.policy.params}, tokens, mask)
  got = ppo.at_response(POLICY, state.policy.params, tokens, mask, 3)
  np.testing.assert_allclose(np.asarray(got), np.asarray(full[:, -4:-1]), atol=1e-5)


def _rollout(state, n_rows, reward_token, rng, value_model=VALUE):
  """One-token responses to a fixed prompt; reward 1 for ``reward_token``, else 0."""
  prompt = jnp.tile(jnp.array([[3, 4, 5]], jnp.int32), (n_rows, 1))
  mask = jnp.ones_like(prompt)
  cfg = sample_lib.SamplingConfig(max_new_tokens=1, stop_ids=())
  out = sample_lib.sample(POLICY, state.policy.params, prompt, mask, jnp.arange(n_rows), rng, cfg)
  tokens = jnp.concatenate([prompt, out["tokens"]], 1)
  full_mask = jnp.concatenate([mask, out["mask"]], 1)
  resp_mask = out["mask"].astype(jnp.float32)
  values = ppo.response_values(POLICY, value_model, (state.policy.params, state.value.params),
                               tokens, full_mask, 1)
  score = (out["tokens"][:, 0] == reward_token).astype(jnp.float32)
  rewards, _ = ppo.token_rewards(out["logp"], out["logp"], resp_mask, score, state.kl_coef)
  adv, ret = ppo.gae(rewards, values, resp_mask)
  return {"tokens": tokens, "mask": full_mask, "resp_mask": resp_mask, "logp_old": out["logp"],
          "values_old": values, "advantages": adv, "returns": ret}, score


def test_first_update_has_ratio_one_and_zero_approx_kl():
  """Old log-probs from the sampler, new ones from the update's forward: at the first
  minibatch of the first epoch they are the same policy, so ratio ≡ 1, approx_kl ≡ 0, no clip."""
  state, tx = _state()
  rollout, _ = _rollout(state, 16, 7, jax.random.PRNGKey(1))
  update = jax.jit(ppo.make_ppo_update(POLICY, VALUE, tx, tx, epochs=2, minibatches=2))
  _, m = update(state, rollout)
  assert float(m["first_minibatch_ratio_sum"] / m["first_minibatch_ratio_count"]) == \
      pytest.approx(1.0, abs=1e-5)
  assert float(m["pg_loss_count"]) == 16 * 2  # 2 epochs × 16 response tokens


@pytest.mark.parametrize("shared", [False, True])
def test_ppo_finds_the_one_rewarded_token(shared):
  """A toy task with a known optimum: one response token, reward 1 only for token 7 (initially
  ~1/61 likely). 25 PPO iterations (64 rollouts, 2 epochs × 4 minibatches) must take its
  probability above 0.9 — a flipped sign anywhere (advantage, ratio, loss) drives it to 0. With
  a value model of its own, and with the value a head on the policy's trunk."""
  state, tx = _state(lr=1e-2, shared=shared)
  value = None if shared else VALUE
  update = jax.jit(ppo.make_ppo_update(POLICY, value, tx, tx, epochs=2, minibatches=4))
  rollout_fn = jax.jit(lambda s, k: _rollout(s, 64, 7, k, value))
  for it in range(25):
    rollout, _ = rollout_fn(state, jax.random.PRNGKey(100 + it))
    state, _ = update(state, rollout)
  logits = POLICY.apply({"params": state.policy.params}, jnp.array([[3, 4, 5]]),
                        jnp.ones((1, 3), jnp.int32))[0, -1]
  p7 = float(jax.nn.softmax(logits)[7])
  print(f"P(token 7) after 25 iterations: {p7:.3f}")
  assert p7 > 0.9


def test_sharded_update_on_8_devices_equals_1_device():
  """The rollout split over 8 simulated devices (data axis), params replicated: the same
  updated params and metrics as on one device, to float32 tolerance."""
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P
  state, tx = _state()
  rollout, _ = _rollout(state, 16, 7, jax.random.PRNGKey(3))
  update = ppo.make_ppo_update(POLICY, VALUE, tx, tx, epochs=2, minibatches=2)
  one_state, one_m = jax.jit(update)(state, rollout)
  mesh = jax.make_mesh((8,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
  sharded = jax.device_put(rollout, NamedSharding(mesh, P("data")))
  rep = jax.device_put(state, NamedSharding(mesh, P()))
  many_state, many_m = jax.jit(update)(rep, sharded)
  for a, b in zip(jax.tree.leaves(one_state.policy.params), jax.tree.leaves(many_state.policy.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5)
  np.testing.assert_allclose(float(one_m["pg_loss_sum"]), float(many_m["pg_loss_sum"]), rtol=1e-4)


def test_the_update_compiles_once_across_iterations_and_kl_coefficients():
  """The PPO pitfall of retracing: a second rollout of the same shapes, with a new λ_KL value in
  the state, reuses the one compiled update (``_cache_size`` counts compilations)."""
  state, tx = _state()
  update = jax.jit(ppo.make_ppo_update(POLICY, VALUE, tx, tx, epochs=1, minibatches=2))
  for it, coef in enumerate((0.001, 0.05)):
    rollout, _ = _rollout(state, 8, 7, jax.random.PRNGKey(it))
    state, _ = update(state.replace(kl_coef=jnp.float32(coef)), rollout)
  assert update._cache_size() == 1


def test_value_model_starts_from_the_pm_or_from_pi0s_trunk_with_a_zero_head():
  """``value_init``: "pm" takes the PM's trunk and head (and refuses a PM of another shape, which
  would otherwise fail deep inside the update); "policy" takes π0's trunk and a zero head of the
  policy's width (any PM size: the robustness sweep trains small policies on the largest PM)."""
  from hh.ppo import train as ppo_stage
  pol = {"trunk": {"embed": {"embedding": jnp.ones((11, 4))}, "w": jnp.full((4, 4), 2.0)}}
  pm = {"trunk": {"embed": {"embedding": jnp.ones((11, 4))}, "w": jnp.full((4, 4), 3.0)},
        "head": {"kernel": jnp.full((4,), 5.0), "bias": jnp.float32(1.0)}}
  v = ppo_stage.initial_value_params("pm", pm, pol)
  assert float(v["trunk"]["w"][0, 0]) == 3.0 and float(v["head"]["bias"]) == 1.0
  big = {"trunk": {"embed": {"embedding": jnp.ones((11, 8))}, "w": jnp.ones((8, 8))},
         "head": {"kernel": jnp.ones((8,)), "bias": jnp.float32(1.0)}}
  with pytest.raises(ValueError, match="config.ppo.value_init='pm' needs a PM of the policy's"):
    ppo_stage.initial_value_params("pm", big, pol)
  v = ppo_stage.initial_value_params("policy", big, pol)
  assert float(v["trunk"]["w"][0, 0]) == 2.0
  assert v["head"]["kernel"].shape == (4,) and not np.any(v["head"]["kernel"])
  assert float(v["head"]["bias"]) == 0.0
  v = ppo_stage.initial_value_params("shared", big, pol)  # a head alone, of the policy's width
  assert set(v) == {"head"} and v["head"]["kernel"].shape == (4,)
  assert not np.any(v["head"]["kernel"]) and float(v["head"]["bias"]) == 0.0
  with pytest.raises(ValueError, match="allowed: pm, policy, shared"):
    ppo_stage.initial_value_params("trunk", pm, pol)


def test_a_shared_value_head_reads_the_policys_own_trunk():
  """``value_model=None``: log-probs (at a temperature) and entropies as the policy's own head
  gives them, values = the trunk's states at the positions before each response token · kernel
  + bias (float64 numpy), the same from ``response_values``; the states are the policy's
  (another trunk's would differ)."""
  state, _ = _state(shared=True)
  tokens, mask = left_padded_batch([9, 5], 9, seed=7)
  n = 3
  params = (state.policy.params, state.value.params)
  logp, h, values = ppo.response_outputs(POLICY, None, params, tokens, mask, n, 0.7)
  logits = ppo.at_response(POLICY, state.policy.params, tokens, mask, n)
  np.testing.assert_allclose(np.asarray(logp), np.asarray(
      ppo.token_log_probs(logits, tokens[:, -n:], 0.7)), atol=1e-6)
  np.testing.assert_allclose(np.asarray(h), np.asarray(ppo.token_entropy(logits)), atol=1e-6)
  hidden = np.asarray(POLICY.apply({"params": state.policy.params}, tokens, mask,
                                   method=lambda m, t, k: m.trunk(t, k)), np.float64)
  head = state.value.params["head"]
  want = hidden[:, -n - 1:-1] @ np.asarray(head["kernel"], np.float64) + float(head["bias"])
  np.testing.assert_allclose(np.asarray(values), want, atol=1e-5)
  np.testing.assert_allclose(np.asarray(ppo.response_values(POLICY, None, params, tokens, mask,
                                                            n)), want, atol=1e-5)
  other = _state(seed=5)[0].policy.params
  assert np.abs(np.asarray(ppo.response_values(POLICY, None, (other, state.value.params),
                                               tokens, mask, n)) - want).max() > 1e-3


def test_a_shared_trunk_is_trained_by_the_value_loss_scaled_by_vf_coef():
  """One SGD step on one minibatch. The shared head's step equals that of a separate ValueModel
  holding the policy's trunk and the same head (the same function of the head; at vf_coef = 0
  neither moves). The policy's
  step equals the separate models' policy step at vf_coef = 0 (the clipped surrogate alone) and
  differs in the trunk, not in the LM head, at vf_coef = 1 (the value loss reaches the trunk)."""
  sgd = optax.sgd(0.5)
  shared, _ = _state(shared=True, tx=sgd)
  separate = shared.replace(value=shared.value.replace(
      params={"trunk": shared.policy.params["trunk"], "head": shared.value.params["head"]},
      opt_state=sgd.init({"trunk": shared.policy.params["trunk"],
                          "head": shared.value.params["head"]})))
  rollout, _ = _rollout(separate, 8, 7, jax.random.PRNGKey(4))
  rollout = {**rollout, "returns": rollout["returns"] + 1.5}  # a value error to learn

  def step(state, value_model, vf_coef):
    upd = ppo.make_ppo_update(POLICY, value_model, sgd, sgd, epochs=1, minibatches=1,
                              vf_coef=vf_coef)
    return jax.jit(upd)(state, rollout)[0]

  def flat(tree):
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in
            jax.tree_util.tree_leaves_with_path(tree)}
  for vf_coef in (0.0, 1.0):  # (the separate models' policy step does not depend on it)
    sh, sep = step(shared, None, vf_coef), step(separate, VALUE, vf_coef)
    for k, v in flat(sh.value.params["head"]).items():
      np.testing.assert_allclose(v, flat(sep.value.params["head"])[k], atol=1e-6)
    got, want = flat(sh.policy.params), flat(sep.policy.params)
    moved = {k for k in got if np.abs(got[k] - want[k]).max() > 1e-6}
    if vf_coef == 0.0:
      assert not moved
    else:
      assert any(k.startswith("['trunk']") for k in moved)
      assert not any(k.startswith("['head']") for k in moved), moved


# The update on ragged, multi-token responses sampled at T = 0.7: what its math must not ignore.

T = 0.7


def _ragged_rollout(state, n_rows=16, n=5, seed=0):
  """Left-padded prompts of different lengths, responses of up to ``n`` tokens sampled at T
  (a third of the vocabulary ends a turn, so rows end at different lengths), GAE on random
  scores; every array as the stage hands it to the update."""
  lengths = [3 + i % 4 for i in range(n_rows)]
  prompt, pmask = left_padded_batch(lengths, 6, seed=seed)
  cfg = sample_lib.SamplingConfig(max_new_tokens=n, temperature=T,
                                  stop_ids=tuple(range(5, 25)))
  out = sample_lib.sample(POLICY, state.policy.params, prompt, pmask, jnp.arange(n_rows),
                          jax.random.PRNGKey(seed), cfg)
  tokens = jnp.concatenate([prompt, out["tokens"]], 1)
  mask = jnp.concatenate([pmask, out["mask"]], 1)
  resp = out["mask"].astype(jnp.float32)
  assert len(set(np.asarray(resp.sum(1)).tolist())) > 1, "responses should be ragged"
  values = ppo.response_values(POLICY, VALUE, (state.policy.params, state.value.params),
                               tokens, mask, n)
  score = jnp.asarray(np.random.default_rng(seed).normal(size=n_rows), jnp.float32)
  rewards, _ = ppo.token_rewards(out["logp"], out["logp"], resp, score, state.kl_coef,
                                 out["finished"])
  adv, ret = ppo.gae(rewards, values, resp)
  return {"tokens": tokens, "mask": mask, "resp_mask": resp, "logp_old": out["logp"],
          "values_old": values, "advantages": adv, "returns": ret}


def _update(state, rollout, tx, epochs=1, minibatches=4):
  upd = ppo.make_ppo_update(POLICY, VALUE, tx, tx, epochs=epochs, minibatches=minibatches,
                            temperature=T)
  return jax.jit(upd)(state, rollout)


def _assert_same_update(a, b, atol=2e-5):
  (sa, ma), (sb, mb) = a, b
  for x, y in zip(jax.tree.leaves((sa.policy.params, sa.value.params)),
                  jax.tree.leaves((sb.policy.params, sb.value.params))):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol)
  for k in ("pg_loss_sum", "vf_loss_sum", "ratio_sum"):
    assert float(ma[k]) == pytest.approx(float(mb[k]), rel=1e-4, abs=1e-5), k


def _max_param_change(a, b) -> float:
  return max(float(np.abs(np.asarray(x) - np.asarray(y)).max())
             for x, y in zip(jax.tree.leaves(a[0].policy.params), jax.tree.leaves(b[0].policy.params)))


def test_token_log_probs_at_a_temperature_match_numpy():
  logits = RNG.normal(size=(2, 3, 7))
  targets = np.array([[1, 4, 6], [0, 2, 3]])
  z = logits / T
  want = z - np.log(np.exp(z).sum(-1, keepdims=True))
  got = ppo.token_log_probs(jnp.asarray(logits, jnp.float32), jnp.asarray(targets), T)
  np.testing.assert_allclose(np.asarray(got), np.take_along_axis(want, targets[..., None], -1)[..., 0],
                             atol=1e-5)
  with pytest.raises(ValueError, match="temperature > 0"):
    ppo.token_log_probs(jnp.asarray(logits, jnp.float32), jnp.asarray(targets), 0.0)


def test_first_minibatch_ratio_is_one_on_ragged_responses_at_a_temperature():
  """The sampler's log-probs at T and the update's at T are the same policy's: on the first
  minibatch the ratio is 1 at every response token, whatever the padding and the lengths."""
  state, tx = _state()
  rollout = _ragged_rollout(state)
  _, m = _update(state, rollout, tx, epochs=2, minibatches=4)
  assert float(m["first_minibatch_ratio_sum"] / m["first_minibatch_ratio_count"]) == \
      pytest.approx(1.0, abs=1e-5)
  assert float(m["pg_loss_count"]) == 2 * float(rollout["resp_mask"].sum())


def test_masked_positions_change_nothing():
  """Junk in every masked position (old log-probs, values, advantages, returns, tokens after a
  response ended and in the left padding) leaves the update as it was: nothing outside the
  masks — the advantage whitening included — may read them."""
  state, tx = _state()
  rollout = _ragged_rollout(state)
  rng = np.random.default_rng(3)
  off = 1.0 - np.asarray(rollout["resp_mask"])
  junk = {k: jnp.asarray(np.asarray(rollout[k]) + off * rng.normal(50.0, 30.0, off.shape),
                         jnp.float32)
          for k in ("logp_old", "values_old", "advantages", "returns")}
  tokens = np.asarray(rollout["tokens"]).copy()
  free = np.asarray(rollout["mask"]) == 0
  tokens[free] = rng.integers(5, CFG.vocab_size, free.sum())
  dirty = {**rollout, **junk, "tokens": jnp.asarray(tokens)}
  _assert_same_update(_update(state, rollout, tx), _update(state, dirty, tx))


def test_advantages_are_whitened_over_the_rollout():
  """Whitening makes the update blind to an affine map a·A + b (a > 0) of the advantages; a
  mean or a scale that reached the loss would change it."""
  state, tx = _state()
  rollout = _ragged_rollout(state)
  moved = {**rollout, "advantages": (3.0 * rollout["advantages"] + 5.0) * rollout["resp_mask"]}
  base = _update(state, rollout, tx)
  _assert_same_update(base, _update(state, moved, tx), atol=1e-4)
  # the test can see a difference: the same update on advantages of the other sign moves away
  flipped = {**rollout, "advantages": -rollout["advantages"]}
  assert _max_param_change(base, _update(state, flipped, tx)) > 1e-4


def test_minibatches_are_shuffled_by_the_policys_rng():
  """The only randomness of the update is the minibatch order: with one minibatch the policy's
  rng changes nothing; with four, another rng gives other minibatches and another update."""
  state, tx = _state()
  rollout = _ragged_rollout(state)
  other = state.replace(policy=state.policy.replace(rng=jax.random.PRNGKey(123)))
  _assert_same_update(_update(state, rollout, tx, minibatches=1),
                      _update(other, rollout, tx, minibatches=1))
  assert _max_param_change(_update(state, rollout, tx), _update(other, rollout, tx)) > 1e-5
