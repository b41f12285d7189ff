"""The transformer against a float64 numpy reference; KV-cache decoding; padding invariance."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special

from hh.models import DecoderLM, ModelConfig, PreferenceModel, ScalarHead, Transformer
from hh.models.decoding import decode_step, prefill

CFG = ModelConfig(vocab_size=61, n_layer=2, d_model=32, n_head=4, d_ff=48)


def init_params(cfg=CFG, seed=0, scale=3.0):
  """Parameters scaled up from their init so that every term moves the output."""
  tokens = jnp.zeros((1, 4), jnp.int32)
  params = nn.unbox(DecoderLM(cfg).init(jax.random.key(seed), tokens, tokens))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
  leaves = [x * scale + 0.1 * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys)]
  return jax.tree.unflatten(tree, leaves)


def _ln(x, scale, bias, eps=1e-6):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + eps) * scale + bias


def _gelu(x, approximate=True):  # tanh approximation (jax.nn.gelu's default) or exact
  if not approximate:
    return 0.5 * x * (1 + scipy.special.erf(x / np.sqrt(2)))
  return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))


def _rope(x, pos, theta):  # x [T, H, K], pos [T]
  half = x.shape[-1] // 2
  freq = theta ** (-np.arange(half) / half)
  ang = pos[:, None, None] * freq
  x1, x2 = x[..., :half], x[..., half:]
  return np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                         x2 * np.cos(ang) + x1 * np.sin(ang)], -1)


def reference_logits(params, tokens, mask, cfg=CFG):
  """Float64 numpy forward of one row at a time over its real tokens only (no padding at all)."""
  p = jax.tree.map(lambda a: np.asarray(a, np.float64), params)
  out = []
  for row, m in zip(np.asarray(tokens), np.asarray(mask)):
    ids = row[m.astype(bool)]
    t = len(ids)
    x = p["trunk"]["embed"]["embedding"][ids]
    pos = np.arange(t, dtype=np.float64)
    for layer in range(cfg.n_layer):
      lp = jax.tree.map(lambda a, i=layer: a[i], p["trunk"]["layers"])
      h = _ln(x, lp["ln_attn"]["scale"], lp["ln_attn"]["bias"])
      q = _rope(np.einsum("td,dhk->thk", h, lp["attn"]["query"]), pos, cfg.rope_theta)
      k = _rope(np.einsum("td,dhk->thk", h, lp["attn"]["key"]), pos, cfg.rope_theta)
      v = np.einsum("td,dhk->thk", h, lp["attn"]["value"])
      s = np.einsum("thk,shk->hts", q, k) / np.sqrt(cfg.d_head)
      s = np.where(np.tril(np.ones((t, t), bool))[None], s, -np.inf)
      a = np.exp(s - s.max(-1, keepdims=True))
      a /= a.sum(-1, keepdims=True)
      x = x + np.einsum("hts,shk,hkd->td", a, v, lp["attn"]["out"])
      h = _ln(x, lp["ln_mlp"]["scale"], lp["ln_mlp"]["bias"])
      x = x + _gelu(h @ lp["mlp"]["wi"], cfg.gelu_approximate) @ lp["mlp"]["wo"]
    x = _ln(x, p["trunk"]["ln_final"]["scale"], p["trunk"]["ln_final"]["bias"])
    out.append(x @ p["head"]["kernel"])
  return out


def left_padded_batch(lengths, t_len, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(5, CFG.vocab_size, (len(lengths), t_len)).astype(np.int32)
  mask = np.zeros_like(tokens)
  for i, n in enumerate(lengths):
    mask[i, t_len - n:] = 1
  return jnp.asarray(tokens * mask), jnp.asarray(mask)


@pytest.mark.parametrize("approximate,chunk", [(True, 0), (False, 0), (True, 4), (True, 3)])
def test_forward_matches_float64_reference(approximate, chunk):
  """Also with causal query blocks (chunk 4: three blocks of a 12-token row; 3: four blocks)."""
  import dataclasses
  cfg = dataclasses.replace(CFG, gelu_approximate=approximate, attn_chunk=chunk)
  params = init_params()
  tokens, mask = left_padded_batch([12, 5, 9], 12)
  logits = DecoderLM(cfg).apply({"params": params}, tokens, mask)
  for got, m, ref in zip(np.asarray(logits), np.asarray(mask), reference_logits(params, tokens,
                                                                               mask, cfg)):
    assert np.abs(ref).max() > 1.0  # a non-trivial output
    np.testing.assert_allclose(got[m.astype(bool)], ref, rtol=1e-4, atol=1e-4)


def test_left_padding_invariance():
  """Rows padded on the left give the outputs of the same rows alone, unpadded (fp32, 1e-5)."""
  params = init_params(seed=3)
  model = DecoderLM(CFG)
  tokens, mask = left_padded_batch([12, 7, 3], 12, seed=1)
  logits = model.apply({"params": params}, tokens, mask)
  for i, n in enumerate([12, 7, 3]):
    alone = model.apply({"params": params}, tokens[i:i + 1, -n:], mask[i:i + 1, -n:])
    np.testing.assert_allclose(logits[i, -n:], alone[0], rtol=1e-5, atol=1e-5)
  assert np.isfinite(np.asarray(logits)).all()  # pad queries see no key: uniform, not NaN


@pytest.mark.parametrize("attention", ["auto", "xla"])
def test_cached_decoding_equals_full_forward(attention):
  """Prefill a left-padded prompt, then feed one token at a time: logits == full forward (the
  full forward by either attention implementation)."""
  import dataclasses
  params = init_params(seed=5)
  model = DecoderLM(dataclasses.replace(CFG, attention=attention))
  tokens, mask = left_padded_batch([10, 6], 10, seed=2)
  prompt_len, total = 6, 10
  full = model.apply({"params": params}, tokens, mask)
  logits, cache, kv_mask, position = prefill(model, params, tokens[:, :prompt_len],
                                             mask[:, :prompt_len], max_len=total)
  steps = [logits]
  step_fn = jax.jit(lambda tok, c, kvm, slot, pos: decode_step(model, params, tok, c, kvm, slot,
                                                               pos))
  for slot in range(prompt_len, total):
    # the second row's prompt is all padding until slot 4: feed its real tokens as decoding
    step_logits, cache, kv_mask = step_fn(tokens[:, slot], cache, kv_mask, jnp.int32(slot),
                                          position)
    position = position + 1
    steps.append(step_logits[:, None])
  cached = jnp.concatenate(steps, axis=1)
  real = np.asarray(mask, bool)
  real[:, :prompt_len] &= np.asarray(mask[:, :prompt_len], bool)
  np.testing.assert_allclose(np.asarray(cached)[real], np.asarray(full)[real], rtol=1e-5,
                             atol=1e-5)


def test_scalar_head_reads_chosen_position():
  cfg = CFG
  params = init_params()
  tokens, mask = left_padded_batch([8, 4], 8, seed=4)
  hidden = Transformer(cfg).apply({"params": params["trunk"]}, tokens, mask)
  head = ScalarHead(cfg)
  head_params = {"kernel": jnp.arange(cfg.d_model, dtype=jnp.float32) / 10.0,
                 "bias": jnp.float32(0.5)}
  last = jnp.array([7, 7])
  got = head.apply({"params": head_params}, hidden, last)
  ref = np.asarray(hidden, np.float64)[[0, 1], [7, 7]] @ np.asarray(head_params["kernel"],
                                                                     np.float64) + 0.5
  np.testing.assert_allclose(got, ref, rtol=1e-5)
  per_position = head.apply({"params": head_params}, hidden)
  assert per_position.shape == (2, 8)
  np.testing.assert_allclose(per_position[:, 7], got, rtol=1e-6)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch", "save_dots_except_mlp",
                                    "offload"])
def test_remat_policies_do_not_change_gradients(policy):
  import dataclasses
  params = init_params(seed=7, scale=1.0)
  tokens, mask = left_padded_batch([8, 5], 8, seed=5)

  def loss(p, cfg):
    logits = DecoderLM(cfg).apply({"params": p}, tokens, mask)
    return (jax.nn.log_softmax(logits) * mask[..., None]).sum()

  g0 = jax.grad(loss)(params, CFG)
  g1 = jax.grad(loss)(params, dataclasses.replace(CFG, remat_policy=policy))
  for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)  # fp32 recomputation order


def _right_padded(lengths, t_len, seed):
  tokens, mask = left_padded_batch(lengths, t_len, seed)
  tokens, mask = np.array(tokens), np.array(mask)
  for i, n in enumerate(lengths):  # move each row's real tokens to the front
    tokens[i], mask[i] = np.roll(tokens[i], n - t_len), np.roll(mask[i], n - t_len)
  return jnp.asarray(tokens), jnp.asarray(mask)


@pytest.mark.parametrize("policy,n_layer", [("none", 2), ("full", 2), ("none", 1)])
def test_read_out_forward_equals_full_forward_and_its_gradient(policy, n_layer):
  """The PM's read-out path (last layer at the read position only) against the full trunk read
  there: scores and every parameter gradient, for left- and right-padded rows."""
  import dataclasses
  cfg = dataclasses.replace(CFG, n_layer=n_layer, remat_policy=policy)
  model = PreferenceModel(cfg)
  tokens, mask = left_padded_batch([10, 6, 3], 10, seed=6)
  params = model.init(jax.random.key(0), tokens, mask, jnp.zeros(3, jnp.int32))["params"]
  leaves, tree = jax.tree.flatten(nn.unbox(params))
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])

  def full(p, tokens, mask, index):  # the whole trunk at every position, then the head
    hidden = Transformer(cfg).apply({"params": p["trunk"]}, tokens, mask)
    return ScalarHead(cfg).apply({"params": p["head"]}, hidden, index)

  def read_out(p, tokens, mask, index):
    return model.apply({"params": p}, tokens, mask, index)

  # jitted (one compile per function, the three cases share shapes): op by op it took minutes
  grad_full = jax.jit(jax.grad(lambda p, *a: (full(p, *a) ** 2).sum()))
  grad_read = jax.jit(jax.grad(lambda p, *a: (read_out(p, *a) ** 2).sum()))
  full, read_out = jax.jit(full), jax.jit(read_out)
  for tokens, mask, index in [(tokens, mask, jnp.array([9, 9, 9])),
                              (tokens, mask, jnp.array([4, 7, 9])),
                              (*_right_padded([10, 6, 3], 10, 7), jnp.array([9, 5, 2]))]:
    want = full(params, tokens, mask, index)
    assert np.abs(np.asarray(want)).max() > 0.1
    np.testing.assert_allclose(read_out(params, tokens, mask, index), want, rtol=1e-5, atol=1e-5)
    g_full = grad_full(params, tokens, mask, index)
    g_read = grad_read(params, tokens, mask, index)
    for a, b in zip(jax.tree.leaves(g_full), jax.tree.leaves(g_read)):
      np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


def test_bf16_products_accumulate_in_float32_forward_and_backward():
  """``contract`` on bf16 operands (CPU): the product and both gradients against a float64
  reference on the same bf16-rounded inputs, to bf16's output rounding — a bf16 accumulation
  (or a dropped / swapped gradient) is far outside it; float32 operands are plain einsum."""
  from hh.models.transformer import contract
  rng = np.random.default_rng(0)
  a = jnp.asarray(rng.normal(size=(64, 512)), jnp.bfloat16)
  b = jnp.asarray(rng.normal(size=(512, 48)), jnp.bfloat16)
  g = rng.normal(size=(64, 48))
  a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
  y, vjp = jax.vjp(lambda a, b: contract("ti,io->to", a, b), a, b)
  assert y.dtype == jnp.bfloat16
  da, db = vjp(jnp.asarray(g, jnp.bfloat16))
  g64 = np.asarray(jnp.asarray(g, jnp.bfloat16), np.float64)
  for got, want in ((y, a64 @ b64), (da, g64 @ b64.T), (db, a64.T @ g64)):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2**-7, atol=2**-7 *
                               np.abs(want).max())
  # a bf16 accumulation over 512 terms would be off by far more than one output rounding
  err = np.abs(np.asarray(y, np.float64) - a64 @ b64).max() / np.abs(a64 @ b64).max()
  assert err < 2**-8
  y32 = contract("ti,io->to", a.astype(jnp.float32), b.astype(jnp.float32))
  np.testing.assert_array_equal(y32, jnp.einsum("ti,io->to", a.astype(jnp.float32),
                                                b.astype(jnp.float32)))


@pytest.mark.parametrize("rows,split", [(64, 2), (64, 16), (64, 3), (63, 2), (16, 16)])
def test_bf16_weight_gradient_over_split_rows_is_the_float64_sum(rows, split):
  """The weight gradient Σ_t a[t, i] g[t, o] runs as a contraction over (split, rows / split)
  (``einsum_f32acc``: XLA's bf16 kernels then take it); every split — dividing the rows, not
  dividing them (falls back to 2), odd rows (no split), all rows in the split — is the float64
  sum. Pairing a's row block with another block of g, or splitting one operand's rows in the
  other order, is far outside bf16's output rounding; ``_dense`` splits [B, T, D] rows by B."""
  from hh.models.transformer import _dense, contract
  rng = np.random.default_rng(1)
  a = jnp.asarray(rng.normal(size=(rows, 256)), jnp.bfloat16)
  b = jnp.asarray(rng.normal(size=(256, 40)), jnp.bfloat16)
  g = jnp.asarray(rng.normal(size=(rows, 40)) * np.arange(1, rows + 1)[:, None], jnp.bfloat16)
  _, vjp = jax.vjp(lambda a, b: contract("ti,io->to", a, b, split=split), a, b)
  da, db = jax.jit(vjp)(g)
  a64, b64, g64 = (np.asarray(x, np.float64) for x in (a, b, g))
  for got, want in ((db, a64.T @ g64), (da, g64 @ b64.T)):
    assert got.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=2**-7,
                               atol=2**-7 * np.abs(want).max())
  if rows % 4 == 0:   # rows in [B, T] order through _dense: the same sum
    x3 = a.reshape(4, rows // 4, 256)
    _, vjp3 = jax.vjp(lambda x, b: _dense(x, b), x3, b)
    dx3, db3 = jax.jit(vjp3)(g.reshape(4, rows // 4, 40))
    np.testing.assert_allclose(np.asarray(db3, np.float64), a64.T @ g64, rtol=2**-7,
                               atol=2**-7 * np.abs(a64.T @ g64).max())
    np.testing.assert_allclose(np.asarray(dx3, np.float64).reshape(rows, 256), g64 @ b64.T,
                               rtol=2**-7, atol=2**-7 * np.abs(g64 @ b64.T).max())


def test_accelerator_paths_trace_the_plain_products_on_cpu():
  """Inside ``accelerator_paths`` (what ``hh.plan`` compiles under) bf16 ``contract`` and
  ``attend`` trace the accelerator's plain products, outside it their CPU custom-VJP forms; the
  switch is restored on exit, and float32 is the plain form either way."""
  from hh.models.transformer import accelerator_paths, attend, contract

  def prims(fn, *args):
    return {e.primitive.name for e in jax.make_jaxpr(fn)(*args).eqns}

  a, b = jnp.ones((8, 16), jnp.bfloat16), jnp.ones((16, 4), jnp.bfloat16)
  q = jnp.ones((2, 8, 2, 4), jnp.bfloat16)
  mask = jnp.ones((2, 1, 8, 8), bool)
  def dense(a, b):  # traced through a fresh lambda each time: jit caches traces by function
    return contract("ti,io->to", a, b)

  def attn(q):
    return attend(q, q, q, mask, 4)

  assert "custom_vjp_call" in prims(lambda *x: dense(*x), a, b)
  assert "custom_vjp_call" in prims(lambda q: attn(q), q)
  with accelerator_paths():
    assert "custom_vjp_call" not in prims(lambda *x: dense(*x), a, b)
    assert "custom_vjp_call" not in prims(lambda q: attn(q), q)
  assert "custom_vjp_call" in prims(lambda *x: dense(*x), a, b)
  f32 = (a.astype(jnp.float32), b.astype(jnp.float32))
  assert "custom_vjp_call" not in prims(lambda *x: dense(*x), *f32)


def _attention_reference(q, k, v, mask, chunk):
  """Float64 numpy softmax attention with ``attend``'s query blocks: query block i sees keys
  [0, end of block i) and a masked score is float32's minimum (a fully masked row averages its
  block's keys uniformly)."""
  q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
  t_len, s_len = q.shape[1], k.shape[1]
  chunked = chunk and t_len == s_len and t_len > chunk and t_len % chunk == 0
  out = np.zeros(q.shape)
  for lo in range(0, t_len, chunk if chunked else t_len):
    hi = lo + chunk if chunked else t_len
    keys = hi if chunked else s_len
    s = np.einsum("bthk,bshk->bhts", q[:, lo:hi], k[:, :keys])
    s = np.where(np.asarray(mask)[:, :, lo:hi, :keys], s, np.finfo(np.float32).min)
    p = np.exp(s - s.max(-1, keepdims=True))
    out[:, lo:hi] = np.einsum("bhts,bshk->bthk", p / p.sum(-1, keepdims=True), v[:, :keys])
  return out


@pytest.mark.parametrize("t_len,s_len,chunk", [(12, 12, 4), (12, 12, 3), (12, 12, 0), (1, 12, 0)])
def test_bf16_attention_on_cpu_matches_float64_and_its_gradients_the_float32_paths(
    t_len, s_len, chunk):
  """``attend`` on bf16 q, k, v (CPU: the float32-accumulating path with its own backward)
  against a float64 numpy forward, and its q, k and v gradients against autodiff of the
  float32 path on the same bf16-rounded inputs — to bf16 rounding. Left padding gives fully
  masked pad queries; causal blocks of 4 and 3 (three and four blocks), one block, and one
  query over 12 keys (the read-out layer). A dropped D term, swapped dK/dV or a key block
  summed over the wrong query blocks is off by far more."""
  from hh.models.transformer import attend, attention_mask
  rng = np.random.default_rng(7)
  shape = (3, t_len, 2, 8)
  q, g = (jnp.asarray(rng.normal(size=shape), jnp.bfloat16) for _ in range(2))
  k, v = (jnp.asarray(rng.normal(size=(3, s_len, 2, 8)), jnp.bfloat16) for _ in range(2))
  kv_mask = np.ones((3, s_len), np.int32)
  kv_mask[1, :4], kv_mask[2, :9] = 0, 0                      # left padding
  mask = attention_mask(jnp.asarray(kv_mask), t_len, s_len - t_len)
  if t_len > 1:
    assert not np.asarray(mask).any(-1).all()                # some query sees no key at all
  out, vjp = jax.vjp(lambda q, k, v: attend(q, k, v, mask, chunk), q, k, v)
  assert out.dtype == jnp.bfloat16
  want = _attention_reference(q, k, v, mask, chunk)
  np.testing.assert_allclose(np.asarray(out, np.float64), want, atol=2**-7 * np.abs(want).max())
  f32 = [x.astype(jnp.float32) for x in (q, k, v)]
  _, vjp32 = jax.vjp(lambda q, k, v: attend(q, k, v, mask, chunk), *f32)
  for got, ref in zip(vjp(g), vjp32(g.astype(jnp.float32))):
    assert got.dtype == jnp.bfloat16
    ref = np.asarray(ref, np.float64)
    assert np.abs(ref).max() > 0.1
    np.testing.assert_allclose(np.asarray(got, np.float64), ref, atol=2**-6 * np.abs(ref).max())


def test_a_bf16_preference_model_on_cpu_follows_the_float32_one_with_and_without_remat():
  """The PM (scanned layers, causal blocks of 4, the read-out layer) in bf16 compute — the CPU's
  float32-accumulating products and attention backward inside scan and remat — against the same
  float32 parameters run in float32: the loss to 5%, every parameter gradient pointing the same
  way (cosine > 0.99; bf16 through three layers leaves ~0.998, a dropped D term in the attention
  backward 0.2), and remat "full" giving the bf16 gradients of no remat."""
  import dataclasses
  cfg32 = dataclasses.replace(CFG, n_layer=3, attn_chunk=4)
  tokens, mask = left_padded_batch([12, 7, 4], 12, seed=8)
  index = jnp.array([11, 11, 11])
  params = nn.unbox(PreferenceModel(cfg32).init(jax.random.key(2), tokens, mask, index))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  params = jax.tree.unflatten(tree, [x + 0.3 * jax.random.normal(k, x.shape)
                                     for x, k in zip(leaves, keys)])

  def loss(p, cfg):
    return (PreferenceModel(cfg).apply({"params": p}, tokens, mask, index) ** 2).sum()

  step = jax.jit(jax.value_and_grad(loss), static_argnums=1)
  l32, g32 = step(params, cfg32)
  l16, g16 = step(params, dataclasses.replace(cfg32, dtype=jnp.bfloat16))
  _, g16_remat = step(params, dataclasses.replace(cfg32, dtype=jnp.bfloat16, remat_policy="full"))
  assert abs(float(l16) - float(l32)) < 0.05 * abs(float(l32))
  for a, b, c in zip(*(jax.tree.leaves(g) for g in (g32, g16, g16_remat))):
    a, b, c = (np.asarray(x, np.float64).ravel() for x in (a, b, c))
    assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99
    np.testing.assert_allclose(c, b, atol=1e-3 * np.abs(b).max())


def test_an_unrolled_layer_scan_computes_the_same_logits_and_gradients():
  """scan_unroll 2 of 3 layers: an unrolled pair, then the remainder."""
  import dataclasses
  base = dataclasses.replace(CFG, n_layer=3)
  params = init_params(base, seed=8, scale=1.0)
  tokens, mask = left_padded_batch([8, 5], 8, seed=9)

  def loss_grad(cfg):
    def loss(p):
      logits = DecoderLM(cfg).apply({"params": p}, tokens, mask)
      return (jax.nn.log_softmax(logits) * mask[..., None]).sum()
    return jax.jit(jax.value_and_grad(loss))(params)

  want, want_g = loss_grad(base)
  got, got_g = loss_grad(dataclasses.replace(base, scan_unroll=2))
  np.testing.assert_allclose(got, want, rtol=1e-6)
  for a, b in zip(jax.tree.leaves(want_g), jax.tree.leaves(got_g)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)


# Attention by implementation: the fused forms that run here against the reference.

def _attention_case(seed=3, t_len=12, s_len=12, lengths=(12, 8, 3)):
  rng = np.random.default_rng(seed)
  q = jnp.asarray(rng.normal(size=(3, t_len, 2, 8)) / np.sqrt(8), jnp.float32)
  k, v = (jnp.asarray(rng.normal(size=(3, s_len, 2, 8)), jnp.float32) for _ in range(2))
  kv_mask = np.zeros((3, s_len), np.int32)
  for i, n in enumerate(lengths):
    kv_mask[i, s_len - n:] = 1                                 # left padding
  return q, k, v, kv_mask


@pytest.mark.parametrize("t_len,chunk", [(12, 0), (12, 4), (1, 0)])
def test_xla_fused_attention_matches_the_reference_and_float64_with_its_gradients(t_len, chunk):
  """jax.nn.dot_product_attention's XLA form (what "xla" and, on GPU, "cudnn" call) on hh's
  layout: values at every query that sees a key against float64 numpy, and the q, k, v
  gradients through those queries against the reference's, under left padding and the causal
  mask; one query over 12 keys is the PM's read-out."""
  from hh.models.transformer import attend, attention_mask
  q, k, v, kv_mask = _attention_case(t_len=t_len)
  mask = attention_mask(jnp.asarray(kv_mask), t_len, 12 - t_len)
  seen = np.asarray(mask).any(-1)[:, 0]                          # [B, T]: queries with a key
  want = _attention_reference(q, k, v, mask, 0)
  w = jnp.asarray(seen[..., None, None] * np.random.default_rng(0).normal(size=q.shape),
                  jnp.float32)
  outs = {}
  for impl in ("reference", "xla", "blockwise"):
    out, vjp = jax.vjp(lambda q, k, v, i=impl: attend(q, k, v, mask, chunk, i), q, k, v)
    np.testing.assert_allclose(np.asarray(out, np.float64)[seen], want[seen], atol=1e-5)
    outs[impl] = vjp(w)
  for impl in ("xla", "blockwise"):
    for a, b in zip(outs["reference"], outs[impl]):
      assert np.abs(np.asarray(a)).max() > 1e-2
      np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)


def attention_mask_of(kv_mask, t_len):
  from hh.models.transformer import attention_mask
  return attention_mask(jnp.asarray(kv_mask), t_len, kv_mask.shape[1] - t_len)


@pytest.mark.parametrize("t_len,block", [(12, 4), (12, 6), (12, 5), (1, 4)])
def test_blockwise_attention_matches_float64_and_the_references_gradients_at_every_query(
    t_len, block):
  """hh's flash attention in plain JAX over key blocks of 4 and 6 (3 and 2 blocks; 5 does not
  divide 12: blocks of 4), causal with left padding, every query — those that see no key too (the
  uniform average of v, as the reference) — against float64 numpy, and its custom backward's
  q, k, v gradients against autodiff of the reference; one query over 12 keys is the read-out."""
  from hh.models import attention
  q, k, v, kv_mask = _attention_case(t_len=t_len)
  mask = attention_mask_of(kv_mask, t_len)
  np.testing.assert_allclose(np.asarray(attention.blockwise(q, k, v, mask, block), np.float64),
                             _attention_reference(q, k, v, mask, 0), atol=1e-5)
  w = jnp.asarray(np.random.default_rng(1).normal(size=q.shape), jnp.float32)
  grads = [jax.grad(lambda q, k, v, f=f: (f(q, k, v) * w).sum(), (0, 1, 2))(q, k, v)
           for f in (lambda q, k, v: attention.attend(q, k, v, mask),
                     lambda q, k, v: attention.blockwise(q, k, v, mask, block))]
  for a, b in zip(*grads):
    assert np.abs(np.asarray(a)).max() > 1e-2
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), atol=1e-5)


def test_blockwise_key_blocks_divide_the_keys_or_warn():
  """The largest divisor of S up to the block; one block of all keys when S fits in one, and
  with a warning when the divisor would be under an eighth of the block (S prime)."""
  import warnings

  from hh.models import attention
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    assert [attention._key_blocks(s, b) for s, b in ((4096, 512), (1000, 512), (12, 5),
                                                    (12, 16), (7, 0))] == [512, 500, 4, 12, 7]
  with pytest.warns(UserWarning, match="31 keys have no divisor between 2 and 16"):
    assert attention._key_blocks(31, 16) == 31


@pytest.mark.parametrize("impl,keeps_scores", [("reference", True), ("blockwise", False)])
def test_what_a_train_step_keeps_for_the_backward(capsys, impl, keeps_scores):
  """The residuals autodiff saves for an LM's loss gradient without remat: the reference
  attention keeps float32 [B, H, T, T] scores per layer, the blockwise form no [.., T, T] array
  at all (its output and [B, H, T] statistics; the mask is boolean), as the flash kernels do; and
  the MLP keeps one [B, T, F] activation per layer, not the five intermediates of the tanh GELU
  (recomputed from its input in the backward)."""
  import dataclasses
  cfg = dataclasses.replace(CFG, attention=impl, d_model=32, n_head=2, d_ff=40)
  tokens, mask = left_padded_batch([16, 11, 5], 16, seed=2)
  params = DecoderLM(cfg).init(jax.random.key(0), tokens, mask)["params"]

  def loss(p):
    return DecoderLM(cfg).apply({"params": p}, tokens, mask).astype(jnp.float32).mean()
  jax.ad_checkpoint.print_saved_residuals(loss, params)
  saved = [line.split(" ")[0] for line in capsys.readouterr().out.splitlines()]
  scores = [s for s in saved if s.startswith("f32[") and s.endswith(",16,16]")]
  assert bool(scores) == keeps_scores, saved
  assert 1 <= sum(s.endswith("[2,3,16,40]") for s in saved) <= 2, saved  # [L, B, T, F]


@pytest.mark.parametrize("impl", ["xla", "blockwise"])
def test_models_with_fused_attention_match_the_reference_forward_read_out_and_decode(impl):
  """A whole LM and PM with config.model.attention="xla" or "blockwise" against the reference
  model: logits at real positions and the PM's score at the EOC token (the cached decode:
  test_cached_decoding_equals_full_forward)."""
  import dataclasses
  xla = dataclasses.replace(CFG, attention=impl)
  params = init_params(seed=4, scale=1.0)
  tokens, mask = left_padded_batch([9, 6, 2], 9, seed=4)
  ref = DecoderLM(CFG).apply({"params": params}, tokens, mask)
  got = DecoderLM(xla).apply({"params": params}, tokens, mask)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(got)[real], np.asarray(ref)[real], atol=1e-4)
  pm = PreferenceModel(CFG)
  pm_params = pm.init(jax.random.key(0), tokens, mask, jnp.zeros(3, jnp.int32))["params"]
  index = jnp.array([8, 8, 8])
  np.testing.assert_allclose(PreferenceModel(xla).apply({"params": pm_params}, tokens, mask, index),
                             pm.apply({"params": pm_params}, tokens, mask, index), atol=1e-5)


def test_attention_implementations_are_chosen_by_backend_and_named_when_unknown():
  from hh.models import attention
  assert attention.resolve("auto", "cpu", jnp.float32) == "reference"
  assert attention.resolve("auto", "gpu", jnp.bfloat16) == "cudnn"
  assert attention.resolve("auto", "gpu", jnp.float32) == "xla"
  assert attention.resolve("auto", "tpu", jnp.bfloat16) == "pallas"
  assert attention.resolve("xla", "tpu", jnp.bfloat16) == "xla"
  assert attention.resolve("auto", "plan", jnp.bfloat16) == "blockwise"  # hh.plan's programs
  with pytest.raises(ValueError, match=r"config\.model\.attention='flash'; allowed: auto"):
    attention.resolve("flash", "cpu", jnp.float32)
