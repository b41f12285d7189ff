"""Incremental decoding with the explicit KV cache: one prefill, then one-token steps.

The cache has ``max_len`` slots; slot i holds the key/value of the i-th token fed (prompt padding
included), and ``kv_mask`` [B, max_len] marks the slots that hold real tokens. Positions continue
from each row's number of real prompt tokens, so left-padded prompts decode as unpadded ones.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from hh.models.transformer import DecoderLM, init_cache, positions_from_mask


def prefill(model: DecoderLM, params, tokens: jax.Array, mask: jax.Array, max_len: int):
  """Runs the prompt [B, T] through the model and fills cache slots [0, T).

  Returns (logits [B, T, V], cache, kv_mask [B, max_len], next_position [B]).
  """
  batch, t_len = tokens.shape
  cache = init_cache(model.cfg, batch, max_len)
  kv_mask = jnp.zeros((batch, max_len), jnp.int32).at[:, :t_len].set(mask.astype(jnp.int32))
  logits, cache = model.apply({"params": params}, tokens, positions_from_mask(mask), cache,
                              jnp.zeros((), jnp.int32), kv_mask, method=DecoderLM.decode)
  return logits, cache, kv_mask, mask.astype(jnp.int32).sum(-1)


def decode_step(model: DecoderLM, params, token: jax.Array, cache, kv_mask: jax.Array,
                slot: jax.Array, position: jax.Array):
  """Feeds one token per row [B] at cache slot ``slot`` (scalar) and position ``position`` [B].

  Returns (logits [B, V], cache, kv_mask).
  """
  kv_mask = jax.lax.dynamic_update_slice(kv_mask, jnp.ones((kv_mask.shape[0], 1), jnp.int32),
                                         (0, slot))
  logits, cache = model.apply({"params": params}, token[:, None], position[:, None], cache, slot,
                              kv_mask, method=DecoderLM.decode)
  return logits[:, 0], cache, kv_mask
