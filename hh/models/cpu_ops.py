"""hh's own forms of the model's products for bf16 on a CPU backend, and the switch that turns
them off while tracing an accelerator's program (``accelerator_paths``).

On a CPU with bf16 dot products (AMX), XLA runs a bf16 × bf16 → f32 dot several times faster than
an f32 dot, but autodiff's gradients of a bf16 product are bf16 → bf16 dots that are no faster.
These custom VJPs make every product — forward and both gradients — a bf16 × bf16 → f32 one
(``contract``, ``attend_f32acc``), and ``einsum_f32acc`` arranges weight gradients so XLA hands
them to its bf16 kernels. On accelerators, and for float32, none of this applies: ``contract``
is a plain einsum there and the model's attention is the reference or a fused kernel.
Measurements behind each form: docs/history.md (2026-12-01 to 12-03) and docs/benchmarks.md.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools

import jax
import jax.numpy as jnp

from hh.models import attention

Array = jax.Array


_ACCELERATOR_PATHS = contextvars.ContextVar("hh_accelerator_paths", default=False)


@contextlib.contextmanager
def accelerator_paths():
  """Within it, functions traced on a CPU backend take the paths they take on accelerators:
  ``contract`` and ``attend`` skip their bf16-on-CPU forms. ``hh.plan`` compiles a TPU or GPU
  step on CPU devices to estimate its memory, and needs the accelerator's program. jit caches
  by function and arguments, not by this switch: trace a fresh function inside it."""
  token = _ACCELERATOR_PATHS.set(True)
  try:
    yield
  finally:
    _ACCELERATOR_PATHS.reset(token)


def cpu_paths() -> bool:
  """Tracing for a CPU backend, outside ``accelerator_paths``: the CPU-only forms apply."""
  return jax.default_backend() == "cpu" and not _ACCELERATOR_PATHS.get()


def cpu_bf16(*arrays: Array) -> bool:
  """bf16 operands on a CPU backend: the case with its own float32-accumulating products."""
  return all(a.dtype == jnp.bfloat16 for a in arrays) and cpu_paths()


def contract(spec: str, a: Array, b: Array, out_dtype=None, split: int = 2) -> Array:
  """``jnp.einsum(spec, a, b)`` for 2-D operands (every index in two of the three terms).

  bf16 operands on CPU go through ``_contract_f32acc``: every product (forward and both
  gradients) accumulates in float32 and is rounded once to ``out_dtype`` (default: the operands'
  dtype). On a CPU with bf16 dot products (AMX; checked in ``benchmarks/common.py``) XLA runs a
  bf16 × bf16 → f32 dot ~5× faster than an f32 dot, but a bf16 → bf16 dot no faster (2048²:
  ~500 against ~110 and ~85 GFLOP/s); and autodiff's gradient dots would be bf16 → bf16.
  ``split``: how a gradient contracting over a's leading axis splits it (``einsum_f32acc``);
  rows flattened from [B, T, ...] run fastest split by B. On accelerators and for float32
  operands this is plain einsum (float32 results are unchanged). Attention's batched products
  have their own bf16 path (``attend``)."""
  out_dtype = out_dtype or a.dtype
  if cpu_bf16(a, b):
    return _contract_f32acc(spec, jnp.dtype(out_dtype), split, a, b)
  return jnp.einsum(spec, a, b).astype(out_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _contract_f32acc(spec: str, out_dtype, split: int, a: Array, b: Array) -> Array:
  return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(out_dtype)


def _contract_f32acc_fwd(spec, out_dtype, split, a, b):
  return _contract_f32acc(spec, out_dtype, split, a, b), (a, b)


def _contract_f32acc_bwd(spec, out_dtype, split, res, g):
  """For C = Σ A·B: dA = Σ g·B and dB = Σ A·g, each a bf16 × bf16 → f32 product."""
  a, b = res
  ins, out = spec.split("->")
  sa, sb = ins.split(",")
  g = g.astype(a.dtype)
  da = einsum_f32acc(f"{out},{sb}->{sa}", g, b, split)
  db = einsum_f32acc(f"{sa},{out}->{sb}", a, g, split)
  return da.astype(a.dtype), db.astype(b.dtype)


def einsum_f32acc(spec: str, x: Array, y: Array, split: int = 2) -> Array:
  """``jnp.einsum(spec, x, y)`` of 2-D operands (bf16: ``contract``'s gradients; float32 too: the
  fused LM head's, ``lm.step``), accumulated and returned in float32.

  XLA:CPU hands a bf16 dot to its bf16 kernels (YNNPACK) only when the left operand's
  contracted axis is its last; any other it runs as a float32 dot on upcast copies, ~4× slower.
  That is every dense layer's weight gradient, Σ_t x[t, i] y[t, o]. Splitting that leading
  contracted axis in two, (split, n / split), makes a two-axis contraction, which XLA
  canonicalises with a bf16 transpose of ``x`` and runs on those kernels: the 13M W1 step's
  weight gradients 3–4.5× faster (``benchmarks/profile_step.py``). The transpose is fast when
  the split matches the rows' own leading axis (B of [B, T, D] flattened; split 2 of such rows:
  ~5× slower transposes), so ``_dense`` passes it. The same sum, associated otherwise."""
  (sx, sy), out = spec.split("->")[0].split(","), spec.split("->")[1]
  c, n = sx[0], x.shape[0]
  split = split if split > 1 and n % split == 0 else 2
  if c in out or n % split or out != sx[1] + sy.replace(c, ""):
    return jnp.einsum(spec, x, y, preferred_element_type=jnp.float32)
  j = sy.index(c)                      # the contracted axis of y, split the same way
  x2 = x.reshape(split, n // split, x.shape[1])
  y2 = y.reshape(*y.shape[:j], split, n // split, *y.shape[j + 1:])
  dims = (((0, 1), (j, j + 1)), ((), ()))
  return jax.lax.dot_general(x2, y2, dims, preferred_element_type=jnp.float32)


_contract_f32acc.defvjp(_contract_f32acc_fwd, _contract_f32acc_bwd)


def _by_key_block(parts: list[Array], blocks, dtype) -> Array:
  """Sums per-query-block key gradients [B, keys_i, H, K] into [B, S, H, K]: key block j
  collects the query blocks i ≥ j that saw it (one fused sum per block, no scatter)."""
  if len(parts) == 1:
    return parts[0].astype(dtype)
  return jnp.concatenate([sum(parts[i][:, lo:hi] for i in range(j, len(parts))).astype(dtype)
                          for j, (lo, hi, _) in enumerate(blocks)], axis=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def attend_f32acc(q: Array, k: Array, v: Array, mask: Array, chunk: int) -> Array:
  """``attention.attend`` for bf16 q, k, v on CPU: every product bf16 × bf16 → f32, probabilities P
  rounded to bf16 once and kept for the standard softmax-attention backward: with
  D = rowsum(dO ⊙ O), dV = Pᵀ dO, dS = P ⊙ (dO Vᵀ − D) (0 where masked), dQ = dS K,
  dK = dSᵀ Q. Autodiff's backward of ``attend`` runs bf16 → bf16 batched dots (~50 GFLOP/s on
  this CPU against ~90 for bf16 → f32) and several passes over the [B, H, T, S] scores; this
  takes the 13M PM step's attention (one layer's forward and backward) from ~430 to ~200 ms."""
  return _attend_f32acc_fwd(q, k, v, mask, chunk)[0]


def _attend_f32acc_fwd(q, k, v, mask, chunk):
  f32 = jnp.float32
  outs, probs = [], []
  for lo, hi, keys in attention.query_blocks(q.shape[1], k.shape[1], chunk):
    s = jnp.einsum("bthk,bshk->bhts", q[:, lo:hi], k[:, :keys], preferred_element_type=f32)
    s = jnp.where(mask[:, :, lo:hi, :keys], s, jnp.finfo(f32).min)
    e = jnp.exp(s - s.max(-1, keepdims=True))
    p = (e / e.sum(-1, keepdims=True)).astype(q.dtype)                    # [B, H, t, s]
    outs.append(jnp.einsum("bhts,bshk->bthk", p, v[:, :keys],
                           preferred_element_type=f32).astype(q.dtype))
    probs.append(p)
  out = outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)
  return out, (q, k, v, mask, out, tuple(probs))


def _attend_f32acc_bwd(chunk, res, d_out):
  f32 = jnp.float32
  q, k, v, mask, out, probs = res
  blocks = attention.query_blocks(q.shape[1], k.shape[1], chunk)
  d_out = d_out.astype(q.dtype)
  dd = jnp.einsum("bthk,bthk->bht", d_out, out, preferred_element_type=f32)  # D [B, H, T]
  dq, dk, dv = [], [], []
  for (lo, hi, keys), p in zip(blocks, probs):
    g = d_out[:, lo:hi]
    dv.append(jnp.einsum("bhts,bthk->bshk", p, g, preferred_element_type=f32))
    dp = jnp.einsum("bthk,bshk->bhts", g, v[:, :keys], preferred_element_type=f32)
    ds = p.astype(f32) * (dp - dd[:, :, lo:hi, None])
    # masked scores get no gradient (a fully masked row's uniform P is not a function of them)
    ds = jnp.where(mask[:, :, lo:hi, :keys], ds, 0).astype(q.dtype)
    dq.append(jnp.einsum("bhts,bshk->bthk", ds, k[:, :keys],
                         preferred_element_type=f32).astype(q.dtype))
    dk.append(jnp.einsum("bhts,bthk->bshk", ds, q[:, lo:hi], preferred_element_type=f32))
  dq = dq[0] if len(dq) == 1 else jnp.concatenate(dq, axis=1)
  return dq, _by_key_block(dk, blocks, k.dtype), _by_key_block(dv, blocks, v.dtype), None


attend_f32acc.defvjp(_attend_f32acc_fwd, _attend_f32acc_bwd)
