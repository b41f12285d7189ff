"""Shared benchmark helpers: timing with block_until_ready, matmul peak, model FLOPs."""
from __future__ import annotations

import json
import time

import jax
import jax.numpy as jnp


def time_fn(fn, *args, warmup: int = 2, iters: int = 5) -> float:
  """Median seconds per call of a jitted ``fn`` (outputs blocked on)."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t0)
  return sorted(times)[len(times) // 2]


def matmul_peak(dtype=jnp.float32, n: int | None = None, iters: int = 5) -> float:
  """Measured FLOP/s of a square matmul on the default device: this machine's practical peak.

  A bf16 matmul accumulates in float32 (``preferred_element_type``), as the train steps' products
  do and as PyTorch's bf16 matmuls do: the peak MFU is counted against on both sides. ``n``
  defaults to 2048 on CPU (the PyTorch baseline's size) and 8192 on accelerators, where 2048
  cannot fill the chip.
  """
  if n is None:
    n = 2048 if jax.default_backend() == "cpu" else 8192
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  b = jax.random.normal(jax.random.key(1), (n, n), dtype)
  acc = jnp.float32 if jnp.dtype(dtype) in (jnp.bfloat16, jnp.float16) else None
  f = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=acc))
  best = min(time_fn(f, a, b, iters=1) for _ in range(iters))
  return 2 * n**3 / best


def lm_train_flops(n_layer: int, d_model: int, d_ff: int, vocab: int, tokens: int,
                   seq_len: int) -> float:
  """Model FLOPs of one train step (PaLM appendix B): 6·N·tokens + 12·L·T·d·tokens.

  N counts the matmul parameters (attention, MLP, LM head; the embedding lookup is free).
  """
  n_matmul = n_layer * (4 * d_model * d_model + 2 * d_model * d_ff) + d_model * vocab
  return 6 * n_matmul * tokens + 12 * n_layer * seq_len * d_model * tokens


def pm_train_flops(n_layer: int, d_model: int, d_ff: int, sequences: int, seq_len: int) -> float:
  """Model FLOPs of one PM train step with the read-out forward (hh/models/transformer.py).

  Layers 0…L−2 as in ``lm_train_flops`` (no LM head); the last layer needs keys and values at
  every token but its query, output projection, MLP and attention at the EOC token only.
  """
  tokens = sequences * seq_len
  full = lm_train_flops(n_layer - 1, d_model, d_ff, 0, tokens, seq_len)
  kv = 6 * 2 * d_model * d_model * tokens
  read = 6 * (2 * d_model * d_model + 2 * d_model * d_ff) * sequences + 12 * seq_len * d_model * sequences
  return full + kv + read


def emit(workload: str, **figures):
  """The one JSON line a benchmark ends with (the PyTorch baseline's format: tokens_per_s, the peak)."""
  out = {"workload": workload, **{k: round(float(v), 4) for k, v in figures.items()},
         "device": jax.devices()[0].device_kind, "devices": jax.device_count(),
         "jax": jax.__version__}
  print(json.dumps(out), flush=True)
