"""Attention: the reference softmax attention (einsum; scores and softmax in float32), its
KV-cache form, the mask, and the fused kernels that ship with JAX — ``jax.nn.dot_product_attention``
(its XLA form anywhere, cuDNN flash attention on GPU) and the Pallas flash-attention kernel on TPU;
and ``blockwise``, flash attention in plain JAX (any backend): an online softmax over key blocks
whose backward recomputes each block's scores, so only the output and the log-sum-exp are kept.

Shapes: B batch, T queries, S keys (cache slots), H heads, K d_head. Queries arrive scaled by
1/√K; masks are boolean [B, 1, T, S] (a query sees the keys marked True).
"""
from __future__ import annotations

import functools
import warnings

import jax
import jax.numpy as jnp

Array = jax.Array
# config.model.attention: "auto" chooses by backend (``resolve``); "reference" is the einsum form
IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn", "pallas", "blockwise")


def attention_mask(kv_mask: Array, q_len: int, q_offset: Array | int) -> Array:
  """Boolean [B, 1, T, S]: query t (at cache slot q_offset + t) sees real keys at slots ≤ it."""
  s_len = kv_mask.shape[-1]
  q_slot = q_offset + jnp.arange(q_len)[:, None]                   # [T, 1]
  causal = jnp.arange(s_len)[None, :] <= q_slot                     # [T, S]
  return (causal[None] & kv_mask[:, None, :].astype(bool))[:, None]  # [B, 1, T, S]


def query_blocks(t_len: int, s_len: int, chunk: int) -> list[tuple[int, int, int]]:
  """(lo, hi, keys) per query block: queries [lo, hi) attend to keys [0, keys).

  With ``chunk`` > 0 and a full causal forward (S = T, query t at slot t) there are T / chunk
  blocks and block i sees keys up to its end, skipping the masked upper triangle; otherwise one
  block of every query over every key."""
  if not chunk or t_len != s_len or t_len <= chunk or t_len % chunk:
    return [(0, t_len, s_len)]
  return [(lo, lo + chunk, lo + chunk) for lo in range(0, t_len, chunk)]


def attend(q: Array, k: Array, v: Array, mask: Array, chunk: int = 0) -> Array:
  """Softmax attention: q [B, T, H, K] (already scaled by 1/√K), k, v [B, S, H, K], mask
  [B, 1, T, S] → [B, T, H, K], scores and softmax in float32.

  The softmax is normalised after the value matmul (one division over [B, T, H, K] instead of
  over the [B, H, T, S] probabilities). With ``chunk`` > 0 and a full causal forward, query
  blocks skip the masked upper triangle (``_query_blocks``): on CPU the 13M PM step's attention
  is 30% faster (``benchmarks/pm_step.py``). A fully masked row (a pad query) gives the uniform
  average of v. This is the reference form; hh/models/transformer.py's ``attend`` chooses it or
  a fused kernel.
  """
  outs = []
  for lo, hi, keys in query_blocks(q.shape[1], k.shape[1], chunk):
    s = jnp.einsum("bthk,bshk->bhts", q[:, lo:hi], k[:, :keys]).astype(jnp.float32)
    # A finite minimum, not -inf: a fully masked row softmaxes to uniform, not NaN.
    s = jnp.where(mask[:, :, lo:hi, :keys], s, jnp.finfo(jnp.float32).min)
    e = jnp.exp(s - jax.lax.stop_gradient(s.max(-1, keepdims=True)))      # [B, H, t, s]
    out = jnp.einsum("bhts,bshk->bthk", e.astype(q.dtype), v[:, :keys])
    norm = jnp.transpose(e.sum(-1), (0, 2, 1))[..., None]                 # [B, t, H, 1]
    outs.append((out.astype(jnp.float32) / norm).astype(q.dtype))
  return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)


def attend_cached(q: Array, k: Array, v: Array, mask: Array) -> Array:
  """``attend`` over a KV cache stored head-major: q [B, T, H, K] (scaled), k, v [B, H, S, K],
  mask [B, 1, T, S] → [B, T, H, K]. Head-major makes each (row, head) a contiguous [S, K] block:
  a decode step's scores and outputs are batched matrix-vector products that read the cache in
  place (with a [B, S, H, K] cache XLA on CPU transposed every layer's cache each step)."""
  s = jnp.einsum("bthk,bhsk->bhts", q, k).astype(jnp.float32)
  s = jnp.where(mask, s, jnp.finfo(jnp.float32).min)
  e = jnp.exp(s - jax.lax.stop_gradient(s.max(-1, keepdims=True)))          # [B, H, T, S]
  out = jnp.einsum("bhts,bhsk->bthk", e.astype(q.dtype), v)
  norm = jnp.transpose(e.sum(-1), (0, 2, 1))[..., None]                     # [B, T, H, 1]
  return (out.astype(jnp.float32) / norm).astype(q.dtype)


def resolve(name: str, backend: str, dtype) -> str:
  """The implementation ``name`` stands for on ``backend``: ``auto`` is the reference on CPU
  (where hh's own bf16 forms apply, hh/models/cpu_ops.py), cuDNN flash attention on GPU for
  bf16/fp16 (XLA's fused form for float32, which cuDNN does not take) and the Pallas kernel on
  TPU."""
  if name not in IMPLEMENTATIONS:
    raise ValueError(f"config.model.attention={name!r}; allowed: {', '.join(IMPLEMENTATIONS)}")
  if name != "auto":
    return name
  if backend == "plan":  # an accelerator's program compiled on CPU devices (hh.plan): the
    return "blockwise"   # flash kernels' memory (output and log-sum-exp kept), compiled anywhere
  if backend == "gpu":
    return "cudnn" if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else "xla"
  return "pallas" if backend == "tpu" else "reference"


def fused(q: Array, k: Array, v: Array, mask: Array, implementation: str) -> Array:
  """``jax.nn.dot_product_attention`` (``xla`` or ``cudnn``) on hh's layout: q [B, T, H, K]
  (scaled), k, v [B, S, H, K], mask [B, 1, T, S] → [B, T, H, K]. A fully masked row (a pad
  query) is left to the kernel: its output is never read."""
  return jax.nn.dot_product_attention(q, k, v, mask=mask, scale=1.0,
                                      implementation=implementation)


def pallas_tpu(q: Array, k: Array, v: Array, kv_mask: Array) -> Array:
  """The Pallas flash-attention kernel for TPU on a full causal forward: padding through segment
  ids (real keys 1, padding 0, so a real query never sees a pad key), causal over slots.
  q [B, T, H, K] (scaled), k, v [B, T, H, K], kv_mask [B, T] → [B, T, H, K]."""
  from jax.experimental.pallas.ops.tpu import flash_attention as fa
  seg = kv_mask.astype(jnp.int32)
  out = fa.flash_attention(*(jnp.swapaxes(x, 1, 2) for x in (q, k, v)),
                           segment_ids=fa.SegmentIds(q=seg, kv=seg), causal=True, sm_scale=1.0)
  return jnp.swapaxes(out, 1, 2)


def _key_blocks(s_len: int, block: int) -> int:
  """The key block size: the largest divisor of S up to ``block``; all S keys in one block when
  S ≤ ``block``, or, with a warning (the [B, H, T, S] scores are then made whole), when that
  divisor is below ``block`` / 8 (S prime, say: blocks of one key)."""
  if block <= 0 or s_len <= block:
    return s_len
  size = max(d for d in range(1, block + 1) if s_len % d == 0)
  if size * 8 < block:
    warnings.warn(f"blockwise attention: {s_len} keys have no divisor between {block // 8} and "
                  f"{block}; one block of all {s_len} keys (the scores made whole)", stacklevel=2)
    return s_len
  return size


def _blocks(x: Array, n: int, axis: int) -> Array:
  """x split into n equal blocks along ``axis``, stacked first: [n, ..., size / n, ...]."""
  shape = x.shape[:axis] + (n, x.shape[axis] // n) + x.shape[axis + 1:]
  return jnp.moveaxis(x.reshape(shape), axis, 0)


def _blockwise_forward(q, k, v, mask, block):
  """→ out [B, T, H, K] (q's dtype) and the softmax statistics, each [B, H, T] float32: the
  masked scores' maximum m and Σ exp(s − m). (Not their log-sum-exp: a fully masked row's
  m is float32's minimum, which absorbs log S.)"""
  b, t, h, d = q.shape
  n = k.shape[1] // _key_blocks(k.shape[1], block)
  low = jnp.finfo(jnp.float32).min

  def step(carry, kvm):
    acc, m, total = carry                       # [B, T, H, K] f32, [B, H, T], [B, H, T]
    kb, vb, mb = kvm                            # [B, s, H, K], [B, s, H, K], [B, 1, T, s]
    s = jnp.einsum("bthk,bshk->bhts", q, kb, preferred_element_type=jnp.float32)
    s = jnp.where(mb, s, low)                   # as the reference: a finite minimum
    m_new = jnp.maximum(m, s.max(-1))
    scale = jnp.exp(m - m_new)
    p = jnp.exp(s - m_new[..., None])           # [B, H, T, s]
    total = total * scale + p.sum(-1)
    pv = jnp.einsum("bhts,bshk->bthk", p.astype(v.dtype), vb, preferred_element_type=jnp.float32)
    acc = acc * jnp.transpose(scale, (0, 2, 1))[..., None] + pv
    return (acc, m_new, total), None

  init = (jnp.zeros((b, t, h, d), jnp.float32), jnp.full((b, h, t), low, jnp.float32),
          jnp.zeros((b, h, t), jnp.float32))
  (acc, m, total), _ = jax.lax.scan(step, init, (_blocks(k, n, 1), _blocks(v, n, 1),
                                              _blocks(mask, n, 3)))
  out = acc / jnp.transpose(total, (0, 2, 1))[..., None]
  return out.astype(q.dtype), (m, total)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _blockwise(q, k, v, mask, block):
  return _blockwise_forward(q, k, v, mask, block)[0]


def _blockwise_fwd(q, k, v, mask, block):
  out, stats = _blockwise_forward(q, k, v, mask, block)
  return out, (q, k, v, mask, out, stats)


def _blockwise_bwd(block, res, g):
  """Each key block's scores recomputed: p = exp(s − m) / total; dv = pᵀ·g,
  ds = p ⊙ (g·vᵀ − Σ g ⊙ out), zero where masked; dq = ds·k, dk = dsᵀ·q."""
  q, k, v, mask, out, (m, total) = res
  n = k.shape[1] // _key_blocks(k.shape[1], block)
  low = jnp.finfo(jnp.float32).min
  g32 = g.astype(jnp.float32)
  delta = jnp.einsum("bthk,bthk->bht", g32, out.astype(jnp.float32))     # [B, H, T]

  def step(dq, kvm):
    kb, vb, mb = kvm
    s = jnp.einsum("bthk,bshk->bhts", q, kb, preferred_element_type=jnp.float32)
    p = jnp.exp(jnp.where(mb, s, low) - m[..., None]) / total[..., None]  # [B, H, T, s]
    dv = jnp.einsum("bhts,bthk->bshk", p.astype(g.dtype), g, preferred_element_type=jnp.float32)
    dp = jnp.einsum("bthk,bshk->bhts", g, vb, preferred_element_type=jnp.float32)
    ds = jnp.where(mb, p * (dp - delta[..., None]), 0.0).astype(q.dtype)
    dq = dq + jnp.einsum("bhts,bshk->bthk", ds, kb, preferred_element_type=jnp.float32)
    dk = jnp.einsum("bhts,bthk->bshk", ds, q, preferred_element_type=jnp.float32)
    return dq, (dk.astype(k.dtype), dv.astype(v.dtype))

  dq, (dk, dv) = jax.lax.scan(step, jnp.zeros(q.shape, jnp.float32),
                              (_blocks(k, n, 1), _blocks(v, n, 1), _blocks(mask, n, 3)))

  def unblock(x):  # [n, B, s, H, K] → [B, S, H, K]
    return jnp.moveaxis(x, 0, 1).reshape(k.shape)
  return dq.astype(q.dtype), unblock(dk), unblock(dv), None


_blockwise.defvjp(_blockwise_fwd, _blockwise_bwd)


def blockwise(q: Array, k: Array, v: Array, mask: Array, block: int = 512) -> Array:
  """Flash attention in plain JAX: q [B, T, H, K] (scaled), k, v [B, S, H, K], mask [B, 1, T, S]
  → [B, T, H, K], the reference's values (a fully masked row: the uniform average of v).

  Keys in blocks of ``block`` (the largest divisor of S up to it, ``_key_blocks``), an online softmax over them in
  float32; the backward recomputes each block's scores from q, k and the saved statistics, so
  what a train step keeps for it is the output and [B, H, T] statistics, never the [B, H, T, S]
  scores — the memory of the cuDNN and Pallas kernels, on any backend (hh.plan's stand-in for
  them). Every block is computed, the masked upper triangle too."""
  return _blockwise(q, k, v, mask, block)
