"""The LM head a chunk of positions at a time: what a loss or a score needs of each position's
logits, never the [B, T, V] logits themselves.

``lm.step``'s fused head loss covers the LM's loss (a scalar cotangent lets it form the gradients
in the forward). Per-position outputs whose cotangents differ by position — PPO's log-probs, CD's
KL over the teacher's top-k, the scorers' log-likelihoods — go through ``per_position``: each
chunk's logits are recomputed in the backward (one more head matmul), so a step keeps at most one
chunk's logits, ~``rows`` × V float32.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from hh.models import transformer


def token_chunk(b: int, t: int, rows: int = 1024) -> int:
  """Positions per row in one chunk: B × chunk ≈ ``rows``, a divisor of T reached by halving
  (T itself when B·T ≤ rows); 0 if none fits (then the caller takes all T at once)."""
  chunk = t
  while b * chunk > rows and chunk % 2 == 0:
    chunk //= 2
  return chunk if b * chunk <= max(rows, b) else 0


def chunk_rows() -> int:
  """Rows (B × positions) of one chunk: 1,024 on CPU (the fastest of 512–2,048 for the 13M head),
  4,096 on accelerators (a 4,096 × V float32 block: 0.5 GiB at V = 32,000)."""
  return 1024 if transformer.cpu_paths() else 4096


def per_position(fn: Callable[..., Any], x: jax.Array, w: jax.Array, *args: jax.Array,
                 rows: int | None = None) -> Any:
  """``fn(logits [B, c, V] float32, *args' chunks)`` for the logits x @ w, over chunks of c
  positions: x [B, T, D] and w [D, V] in the compute dtype, each of ``args`` [B, T, ...]; ``fn``
  returns a tree of [B, c, ...] arrays, and the result is that tree over all T [B, T, ...].

  Equal to ``fn(transformer.head_logits(x, w), *args)``, values and gradients, without making the
  whole logits: chunks of ``rows`` (default ``chunk_rows()``) rows, each chunk's logits
  recomputed in the backward (``jax.checkpoint``). One chunk when T has no divisor that fits."""
  b, t = x.shape[:2]
  chunk = token_chunk(b, t, rows or chunk_rows())
  if not chunk or chunk == t:
    return fn(transformer.head_logits(x, w), *args)
  n = t // chunk

  def split(a):  # [B, T, ...] → [n, B, c, ...]
    return jnp.moveaxis(a.reshape(b, n, chunk, *a.shape[2:]), 1, 0)

  @jax.checkpoint
  def one_chunk(xc, w, *argc):
    return fn(transformer.head_logits(xc, w), *argc)

  def step(carry, xs):
    return carry, one_chunk(xs[0], w, *xs[1:])

  _, out = jax.lax.scan(step, None, (split(x), *map(split, args)))
  return jax.tree.map(lambda o: jnp.moveaxis(o, 0, 1).reshape(b, t, *o.shape[3:]), out)
