"""The sampler against the full forward: log-probs, greedy, the sampling distribution
(chi-square), padding and device-count invariance, ending turns, bad settings."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from test_model import CFG, init_params, left_padded_batch

from configs import common
from hh import sharding
from hh.models import DecoderLM
from hh.policy import sample as sample_lib

MODEL = DecoderLM(CFG)


def _params(seed=21):
  return init_params(seed=seed, scale=1.0)


def _run(params, prompt, mask, cfg, rng=0, row_ids=None):
  row_ids = jnp.arange(prompt.shape[0]) if row_ids is None else jnp.asarray(row_ids)
  fn = jax.jit(lambda p, x, m, r, k: sample_lib.sample(MODEL, p, x, m, r, k, cfg))
  return jax.tree.map(np.asarray, fn(params, prompt, mask, row_ids, jax.random.PRNGKey(rng)))


def _full_logits(params, prompt, mask, out):
  """Logits of the full forward over prompt + sampled response, at the response positions."""
  tokens = jnp.concatenate([prompt, jnp.asarray(out["tokens"])], axis=1)
  full_mask = jnp.concatenate([mask, jnp.asarray(out["mask"])], axis=1)
  logits = np.asarray(MODEL.apply({"params": params}, tokens, full_mask), np.float64)
  p = prompt.shape[1]
  return logits[:, p - 1:-1]                                 # predicts tokens p … p+N−1


@pytest.mark.parametrize("temperature,cache_block", [(1.0, 64), (0.7, 64), (1.0, 4)])
def test_sampler_log_probs_equal_the_full_forward(temperature, cache_block):
  """fp32, tolerance 1e-4: logp_t1 = log_softmax(logits)[token]; logp = the same at T. With
  ``cache_block`` 4 the cache grows once, after step 4 of 6."""
  params = _params()
  prompt, mask = left_padded_batch([7, 3, 5], 8, seed=2)
  cfg = sample_lib.SamplingConfig(max_new_tokens=6, temperature=temperature, stop_ids=(),
                                  cache_block=cache_block)
  out = _run(params, prompt, mask, cfg)
  assert out["mask"].all() and (out["length"] == 6).all()
  ref = _full_logits(params, prompt, mask, out)
  lsm = lambda x: x - np.log(np.exp(x - x.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - x.max(-1, keepdims=True)  # noqa: E731
  picked = lambda lp: np.take_along_axis(lp, out["tokens"][..., None], -1)[..., 0]  # noqa: E731
  np.testing.assert_allclose(out["logp_t1"], picked(lsm(ref)), atol=1e-4)
  np.testing.assert_allclose(out["logp"], picked(lsm(ref / temperature)), atol=1e-4)


@pytest.mark.parametrize("cache_block", [64, 2])
def test_greedy_equals_step_by_step_argmax_of_the_full_forward(cache_block):
  params = _params(seed=22)
  prompt, mask = left_padded_batch([6, 2], 6, seed=3)
  out = _run(params, prompt, mask, sample_lib.SamplingConfig(
      max_new_tokens=5, temperature=0.0, stop_ids=(), cache_block=cache_block))
  tokens, m = prompt, mask
  for t in range(5):
    logits = MODEL.apply({"params": params}, tokens, m)
    nxt = jnp.argmax(logits[:, -1], -1).astype(jnp.int32)
    np.testing.assert_array_equal(out["tokens"][:, t], nxt)
    tokens = jnp.concatenate([tokens, nxt[:, None]], 1)
    m = jnp.concatenate([m, jnp.ones((2, 1), m.dtype)], 1)
  assert (out["logp"] == 0).all()


def _expected(logits, temperature, top_k, top_p):
  """The truncated, renormalised sampling distribution, in float64 by sorting by hand."""
  x = np.asarray(logits, np.float64) / temperature
  order = np.argsort(-x)
  keep = np.zeros_like(x, bool)
  keep[order[:top_k or len(x)]] = True
  p = np.exp(x - x.max()) * keep
  p /= p.sum()
  if top_p < 1:
    cum, kept = 0.0, np.zeros_like(keep)
    for i in order:
      if not keep[i] or cum >= top_p:
        continue
      kept[i], cum = True, cum + p[i]
    p = p * kept
    p /= p.sum()
  return p


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0), (0.7, 5, 1.0), (1.3, 0, 0.6), (1.0, 8, 0.5), ("boundary", 0, -1e-4),
    ("boundary", 0, 1e-4)])
def test_first_token_follows_the_truncated_softmax(temperature, top_k, top_p):
  """4,000 draws of the first token (one row each, same prompt) against the distribution
  computed by hand; chi-square with a fixed seed, p > 0.001; nothing outside the kept set. The
  boundary cases set top_p just below (1e-4) the mass of the top 3 tokens — the 3rd crosses p and
  is kept, the 4th is not — and just above it, where the 4th crosses and is kept."""
  params = _params(seed=23)
  prompt, mask = left_padded_batch([5], 5, seed=4)
  logits = np.asarray(MODEL.apply({"params": params}, prompt, mask)[0, -1], np.float64)
  offset = None
  if temperature == "boundary":
    temperature, offset = 1.0, top_p
    p = np.sort(np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum())[::-1]
    top_p = float(p[:3].sum()) + offset
  n = 4000
  cfg = sample_lib.SamplingConfig(max_new_tokens=1, temperature=temperature, top_k=top_k,
                                  top_p=top_p, stop_ids=())
  out = _run(params, jnp.tile(prompt, (n, 1)), jnp.tile(mask, (n, 1)), cfg, rng=5)
  want = _expected(logits, temperature, top_k, top_p)
  if offset is not None:
    assert (want > 0).sum() == (3 if offset < 0 else 4)
  counts = np.bincount(out["tokens"][:, 0], minlength=CFG.vocab_size)
  assert counts[want == 0].sum() == 0
  kept = want > 0
  stat = scipy.stats.chisquare(counts[kept], want[kept] * n)
  assert stat.pvalue > 1e-3, (stat, counts[kept], want[kept] * n)


def test_two_level_draw_follows_the_distribution_across_blocks():
  """``draw`` with blocks of 4 over V = 10 (a zero-mass block, zeros inside blocks, a padded last
  block): 20,000 draws against p, chi-square p > 0.001, and no zero-probability token ever."""
  p = np.array([0.1, 0.0, 0.2, 0.05, 0.0, 0.0, 0.0, 0.0, 0.3, 0.35])
  logp = jnp.log(jnp.tile(jnp.asarray(p, jnp.float32), (20_000, 1)))
  keys = jax.random.split(jax.random.PRNGKey(7), 20_000)
  tokens, lp = jax.jit(lambda k, lp: sample_lib.draw(k, lp, block=4))(keys, logp + 3.0)
  tokens = np.asarray(tokens)
  np.testing.assert_allclose(np.asarray(lp), np.log(p[tokens]), rtol=1e-5)  # normalised
  counts = np.bincount(tokens, minlength=10)
  assert counts[p == 0].sum() == 0
  stat = scipy.stats.chisquare(counts[p > 0], p[p > 0] * 20_000)
  assert stat.pvalue > 1e-3, (stat, counts)


def test_draw_at_the_top_of_the_cdf_takes_the_last_possible_token():
  """A threshold past the total mass by rounding must land on the last token with mass, not on a
  zero-probability one after it (the guard in ``draw``)."""
  p = np.array([[0.5, 0.5, 0.0, 0.0, 0.0, 0.0]], np.float32)
  # the rounding guard itself
  idx = sample_lib._last_nonzero(jnp.asarray(p), jnp.array([5]))
  assert int(idx[0]) == 1
  assert int(sample_lib._last_nonzero(jnp.asarray(p), jnp.array([0]))[0]) == 0


def test_a_prompt_alone_and_inside_a_padded_batch_gives_the_same_tokens():
  params = _params(seed=24)
  prompt, mask = left_padded_batch([9, 4, 6], 9, seed=5)
  cfg = sample_lib.SamplingConfig(max_new_tokens=7, temperature=1.0, stop_ids=())
  batch = _run(params, prompt, mask, cfg, rng=3, row_ids=[10, 11, 12])
  alone = _run(params, prompt[1:2, -4:], mask[1:2, -4:], cfg, rng=3, row_ids=[11])
  np.testing.assert_array_equal(batch["tokens"][1], alone["tokens"][0])
  np.testing.assert_allclose(batch["logp_t1"][1], alone["logp_t1"][0], atol=1e-5)


@pytest.mark.parametrize("cache_block", [64, 3])
def test_turns_end_at_a_stop_token_which_is_part_of_the_response(cache_block):
  """(With ``cache_block`` 3, rows end in each of the three cache segments.)"""
  params = _params(seed=25)
  prompt, mask = left_padded_batch([4] * 64, 4, seed=6)
  free = _run(params, prompt, mask, sample_lib.SamplingConfig(max_new_tokens=8, stop_ids=(),
                                                              cache_block=cache_block))
  stop = int(np.bincount(free["tokens"].ravel()).argmax())  # a token some rows do emit
  out = _run(params, prompt, mask, sample_lib.SamplingConfig(
      max_new_tokens=8, stop_ids=(stop,), cache_block=cache_block))
  for row in range(64):
    toks, n = out["tokens"][row], out["length"][row]
    hits = np.flatnonzero(free["tokens"][row] == stop)
    want = hits[0] + 1 if len(hits) else 8  # same draws until the stop: same tokens
    assert n == want and out["finished"][row] == bool(len(hits))
    np.testing.assert_array_equal(toks[:n], free["tokens"][row][:n])
    assert (toks[n:] == 0).all() and (out["mask"][row] == (np.arange(8) < n)).all()
    assert (out["logp_t1"][row][n:] == 0).all()
  assert out["finished"].any() and (~out["finished"]).any()


def test_eight_devices_give_the_tokens_of_one():
  params = _params(seed=26)
  prompt, mask = left_padded_batch([7, 3, 5, 6, 2, 7, 4, 1], 7, seed=7)
  cfg = sample_lib.SamplingConfig(max_new_tokens=5, temperature=1.0, top_k=10, stop_ids=())
  rules = common.base("tiny").axis_rules
  outs = []
  for devices, mesh_cfg in ((jax.devices()[:1], dict(data=1, fsdp=1, tensor=1)),
                            (jax.devices(), dict(data=2, fsdp=4, tensor=1))):
    mesh = sharding.make_mesh(mesh_cfg, devices)
    with jax.set_mesh(mesh):
      sampler = sample_lib.Sampler(MODEL, mesh, rules, cfg, buckets=(8, 16))
      outs.append(sampler(params, np.asarray(prompt), np.asarray(mask), np.arange(8),
                          jax.random.PRNGKey(9)))
  np.testing.assert_array_equal(outs[0]["tokens"], outs[1]["tokens"])
  np.testing.assert_allclose(outs[0]["logp_t1"], outs[1]["logp_t1"], atol=1e-5)


def test_calls_of_fewer_rows_give_the_draws_of_one_call():
  """PPO samples its rollout in calls of ``config.sampling.batch_size`` rows: with global row ids
  the chunks give one call's tokens; ids restarting at 0 in each chunk (the bug this guards)
  would repeat the first chunk's draws."""
  params = _params(seed=27)
  prompt, mask = left_padded_batch([7, 3, 5, 6, 7, 3, 5, 6], 7, seed=8)
  prompt = np.concatenate([prompt[:4], prompt[:4]])  # rows 4–7 repeat the prompts of rows 0–3
  mask = np.concatenate([mask[:4], mask[:4]])
  cfg = sample_lib.SamplingConfig(max_new_tokens=6, temperature=1.0, stop_ids=())
  mesh = sharding.make_mesh(dict(data=1, fsdp=1, tensor=1), jax.devices()[:1])
  with jax.set_mesh(mesh):
    sampler = sample_lib.Sampler(MODEL, mesh, common.base("tiny").axis_rules, cfg, buckets=(8,))
    ids, key = np.arange(8) + 16, jax.random.PRNGKey(3)
    whole = sampler(params, prompt, mask, ids, key)
    chunked = sampler(params, prompt, mask, ids, key, rows_per_call=4)
    local = sampler(params, prompt[4:], mask[4:], np.arange(4), key)
    with pytest.raises(ValueError, match="rows_per_call=3 does not divide the 8 rows"):
      sampler(params, prompt, mask, ids, key, rows_per_call=3)
  for name in ("tokens", "mask", "length", "finished"):
    np.testing.assert_array_equal(chunked[name], whole[name], err_msg=name)
  for name in ("logp", "logp_t1"):  # a batch of 4 rounds its products unlike one of 8
    np.testing.assert_allclose(chunked[name], whole[name], atol=1e-5, err_msg=name)
  assert (whole["tokens"][4:] != whole["tokens"][:4]).any()  # same prompts, other row ids
  assert (local["tokens"] != whole["tokens"][4:]).any()


def test_the_cache_grows_in_blocks_and_each_loop_attends_over_its_own_size():
  """Each decode loop of the program carries caches of P + its end slots (P = 8 here), and the
  tokens and log-probs are those of one loop over the whole cache."""
  assert sample_lib.cache_ends(6, 4) == [4, 6] and sample_lib.cache_ends(9, 3) == [3, 6, 9]
  assert sample_lib.cache_ends(8, 0) == sample_lib.cache_ends(8, 8) == [8]
  params = _params(seed=28)
  prompt, mask = left_padded_batch([8, 3, 5], 8, seed=9)
  cfgs = [sample_lib.SamplingConfig(max_new_tokens=7, stop_ids=(), cache_block=b)
          for b in (0, 3)]
  for cfg, want in zip(cfgs, ([8 + 7], [8 + 3, 8 + 6, 8 + 7])):
    jaxpr = jax.make_jaxpr(lambda p, c=cfg: sample_lib.sample(
        MODEL, p, prompt, mask, jnp.arange(3), jax.random.PRNGKey(0), c))(params)
    loops = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "while"]
    slots = [{v.aval.shape[2] for v in e.outvars if v.aval.ndim == 4} for e in loops]
    assert slots == [{s} for s in want]  # every layer's k and v: [B, Hkv, slots, K]
  whole, grown = (_run(params, prompt, mask, cfg, rng=4) for cfg in cfgs)
  np.testing.assert_array_equal(grown["tokens"], whole["tokens"])
  np.testing.assert_allclose(grown["logp_t1"], whole["logp_t1"], atol=1e-5)


@pytest.mark.parametrize("kwargs,msg", [
    (dict(max_new_tokens=0), "max_new_tokens=0"), (dict(temperature=-1.0), "temperature=-1.0"),
    (dict(top_p=0.0), "top_p=0.0; expected in"), (dict(top_p=1.5), "top_p=1.5"),
    (dict(top_k=-2), "top_k=-2"), (dict(cache_block=-1), "cache_block=-1")])
def test_bad_sampling_settings_are_named(kwargs, msg):
  with pytest.raises(ValueError, match=msg):
    sample_lib.SamplingConfig(**{"max_new_tokens": 4, **kwargs})
  with pytest.raises(ValueError, match="longer than the largest bucket 16"):
    sample_lib.bucket(17, (8, 16))
