"""Attention: the reference softmax attention (einsum; scores and softmax in float32), its
KV-cache form, the mask, and the fused kernels that ship with JAX — ``jax.nn.dot_product_attention``
(its XLA form anywhere, cuDNN flash attention on GPU) and the Pallas flash-attention kernel on TPU.

Shapes: B batch, T queries, S keys (cache slots), H heads, K d_head. Queries arrive scaled by
1/√K; masks are boolean [B, 1, T, S] (a query sees the keys marked True).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array
# config.model.attention: "auto" chooses by backend (``resolve``); "reference" is the einsum form
IMPLEMENTATIONS = ("auto", "reference", "xla", "cudnn", "pallas")


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
  if backend == "plan":  # an accelerator's program compiled on CPU devices (hh.plan)
    return "xla"
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
