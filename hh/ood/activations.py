"""Prompt activations at every layer of a frozen LM (Bai et al. 2022, §5.4: "activations of a prompt at layer
ℓ"), batched, jitted and sharded like every other forward.

Layer 0 is the embedding output, layer ℓ ≥ 1 the residual stream after block ℓ (what
``Transformer.residual_stream`` returns): relative depth ℓ / L. Pooling over the prompt's tokens
(the paper does not say which it used):

* ``last``: the residual stream at the prompt's final token;
* ``mean``: its mean over the prompt's real (unpadded) tokens.

Prompts are taken verbatim (hh's contexts end on the Human turn) and left-padded to a bucket
(one compilation per bucket); a prompt longer than the largest bucket keeps its last tokens —
the request is at the end — and is counted in ``cut``.
"""
from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hh import sharding
from hh.policy import policy as policy_lib
from hh.policy import sample as sample_lib
from hh.train import build as build_lib

POOLS = ("last", "mean")
BUCKETS = (32, 64, 128, 256)


def pool_states(states: Sequence[jax.Array], mask: jax.Array, how: str) -> jax.Array:
  """L + 1 residual-stream arrays [B, T, D] and the mask [B, T] (left-padded) → [L + 1, B, D]
  float32."""
  x = jnp.stack(states).astype(jnp.float32)                            # [L + 1, B, T, D]
  if how == "last":
    return x[:, :, -1]
  if how == "mean":
    m = mask.astype(jnp.float32)[None, :, :, None]
    return (x * m).sum(2) / jnp.maximum(m.sum(2), 1.0)
  raise ValueError(f"pool={how!r}; allowed: {', '.join(POOLS)}")


def encode(policy: policy_lib.Policy, prompts: Sequence[str],
           buckets: Sequence[int] = BUCKETS) -> tuple[list[list[int]], int]:
  """Token ids of each prompt, cut from the left to the largest bucket; (ids, how many cut)."""
  longest = max(buckets)
  ids = policy.tok.encode_batch(list(prompts))
  cut = sum(len(r) > longest for r in ids)
  ids = [r[-longest:] if r else [policy.tok.eoc_id] for r in ids]
  return ids, cut


def layer_activations(policy: policy_lib.Policy, prompts: Sequence[str], pool: str = "last",
                      batch_size: int = 32, buckets: Sequence[int] = BUCKETS) -> np.ndarray:
  """Pooled activations [L + 1, N, D] (float32) of N prompts under ``policy``'s LM.

  Batches are formed in length order, padded to ``batch_size`` rows with repeats and to a
  bucket's length, and sharded over the mesh's batch axes; params stay in their training shards.
  """
  if pool not in POOLS:
    raise ValueError(f"pool={pool!r}; allowed: {', '.join(POOLS)}")
  if not prompts:
    raise ValueError("no prompts to compute activations of")
  model = policy.model

  def forward(params, tokens, mask):
    states = model.apply({"params": params}, tokens, mask, method="residual_stream")
    return pool_states(states, mask, pool)

  fn = build_lib.jit_forward(forward, policy.mesh, policy.rules)
  ids, _ = encode(policy, prompts, buckets)
  order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
  out = None
  with jax.set_mesh(policy.mesh):
    for start in range(0, len(order), batch_size):
      chunk = order[start:start + batch_size]
      rows = chunk + [chunk[-1]] * (batch_size - len(chunk))
      length = sample_lib.bucket(max(len(ids[i]) for i in rows), buckets)
      tokens, mask = policy_lib.left_padded([ids[i] for i in rows], length)
      arrays = sharding.whole_batch({"t": tokens, "m": mask}, policy.mesh)
      acts = sharding.to_host(fn(policy.params, arrays["t"], arrays["m"]))
      if out is None:
        out = np.zeros((acts.shape[0], len(ids), acts.shape[2]), np.float32)
      out[:, chunk] = acts[:, :len(chunk)]
  return out
