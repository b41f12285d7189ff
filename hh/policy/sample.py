"""Sampling from a policy with the model, parameters and sharding it trains with (Bai et al. 2022, §4).

One jitted program per (prompt bucket, batch): a prefill of the left-padded prompts into an
explicit KV cache, then ``lax.while_loop``s of one-token decode steps that exit as soon as every
row has ended its Assistant turn; the cache grows by ``cache_block`` slots from one loop to the
next, so a step attends over the filled cache rounded up to a block, not over all P + N slots.
A turn ends at the token that starts the next speaker's turn — ``"\\n\\nHuman:"``, one piece
of hh's tokenizer — or at ``</s>``; the ending token is part of the response (its mask is 1) so
PPO sees, and can be charged for, where the policy stopped.

Randomness: row i at step t draws with ``fold_in(fold_in(rng, row_id_i), t)``, ``row_id`` the
row's global index, so a prompt's samples do not depend on the batch it is in, its bucket or the
device count. Temperature, top-k and top-p shape the sampling distribution; the returned
``logp`` is the log-probability of each token under that distribution (0 for greedy) and
``logp_t1`` under the model at temperature 1 — the one PPO's ratio and KL need.

Shapes: B rows, P prompt bucket, N = max_new_tokens, V vocabulary.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hh import sharding
from hh.models import (
  DecoderLM,
  decode_params,
  grow_cache,
  init_cache,
  param_logical_axes,
  positions_from_mask,
)
from hh.tokenizer import EOS_ID, PAD_ID

DEFAULT_BUCKETS = (64, 128, 256, 512, 1024, 2048)


@dataclasses.dataclass(frozen=True)
class SamplingConfig:
  """How to sample; ``temperature`` 0 is greedy. ``stop_ids``: tokens that end a turn."""
  max_new_tokens: int
  temperature: float = 1.0
  top_k: int = 0          # keep the k most likely tokens; 0: off
  top_p: float = 1.0      # keep the smallest set whose probability reaches p; 1: off
  stop_ids: tuple[int, ...] = (EOS_ID,)
  cache_block: int = 64   # the KV cache grows by this many slots at a time; 0: all N at once

  def __post_init__(self):
    if self.max_new_tokens < 1:
      raise ValueError(f"max_new_tokens={self.max_new_tokens}; expected ≥ 1")
    if self.temperature < 0:
      raise ValueError(f"temperature={self.temperature}; expected ≥ 0 (0: greedy)")
    if self.top_k < 0:
      raise ValueError(f"top_k={self.top_k}; expected ≥ 0 (0: off)")
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f"top_p={self.top_p}; expected in (0, 1] (1: off)")
    if self.cache_block < 0:
      raise ValueError(f"cache_block={self.cache_block}; expected ≥ 0 (0: the whole cache)")


def cache_ends(n: int, block: int) -> list[int]:
  """The decode steps at which the KV cache grows: while steps [previous end, end) run it holds
  P + end slots, so a step attends over the cache filled so far rounded up to ``block`` slots,
  not over all P + N (with N = 256 and blocks of 64 a step reads on average 5/8 of the new
  tokens' slots, and all P of the prompt's). Each segment is its own loop in the program, so ``block`` trades compile
  time for reads: ``[n]`` (one loop) when ``block`` is 0 or ≥ n."""
  if not block or block >= n:
    return [n]
  return [*range(block, n, block), n]


def end_of_turn_ids(tok) -> tuple[int, ...]:
  """The tokens that end an Assistant turn in hh's format: the next Human marker, or the
  tokenizer's end of text."""
  return (tok.human_id, tok.eos_id)


def sampling_logits(logits: jax.Array, temperature: float, top_k: int,
                    top_p: float) -> jax.Array:
  """Unnormalised log-weights [B, V] of the sampling distribution: logits / T restricted to the
  top-k tokens and then to the smallest top set whose probability reaches ``top_p`` (the token
  that crosses p is kept); −inf outside. Ties at a boundary are all kept. Its log-softmax is the
  sampling distribution's log-probabilities."""
  x = logits.astype(jnp.float32) / temperature
  if top_k:
    kth = jax.lax.top_k(x, top_k)[0][:, -1:]                              # [B, 1]
    x = jnp.where(x < kth, -jnp.inf, x)
  if top_p < 1.0:
    desc = jnp.sort(x, axis=-1)[:, ::-1]                                  # [B, V]
    p = jax.nn.softmax(desc, axis=-1)
    before = jnp.cumsum(p, axis=-1) - p                                   # mass above each
    keep = before < top_p                                                 # incl. the crossing one
    cut = jnp.min(jnp.where(keep, desc, jnp.inf), axis=-1, keepdims=True)  # smallest kept
    x = jnp.where(x < cut, -jnp.inf, x)
  return x


def sampling_log_probs(logits: jax.Array, temperature: float, top_k: int,
                       top_p: float) -> jax.Array:
  """Log-probabilities [B, V] of the sampling distribution (see ``sampling_logits``)."""
  return jax.nn.log_softmax(sampling_logits(logits, temperature, top_k, top_p), axis=-1)


def draw(keys: jax.Array, logw: jax.Array, block: int = 256) -> tuple[jax.Array, jax.Array]:
  """One token per row from unnormalised log-weights [B, V] (−inf: never), by inverting the CDF
  with one uniform per row: B random numbers a step, where Gumbel-max
  (``jax.random.categorical``) draws B·V — at V = 32,000 on CPU that noise cost more than the
  model's decode step. Returns (tokens [B], their log-probabilities [B]).

  Two levels, so no cumulative sum runs over all V (XLA's cumsum is a log-depth scan that reads
  the row ~30 times): the cumulative mass of blocks of ``block`` tokens finds the block, a cumsum
  inside it the token. Token t is drawn when cdf(t−1) < u·total ≤ cdf(t): exact up to float32
  rounding, and tokens of probability 0 are never drawn.
  """
  b, v = logw.shape
  nb = -(-v // block)
  top = jax.lax.stop_gradient(jnp.max(logw, axis=-1, keepdims=True))     # [B, 1]
  p = jnp.pad(jnp.exp(logw - top), ((0, 0), (0, nb * block - v))).reshape(b, nb, block)
  mass = p.sum(-1)                                                         # [B, nb]
  cmass = jnp.cumsum(mass, axis=-1)
  u = jax.vmap(lambda k: jax.random.uniform(k, (), jnp.float32, minval=1e-7))(keys)
  target = u * cmass[:, -1]                                                # [B]
  j = jnp.minimum(jnp.sum(cmass < target[:, None], axis=-1), nb - 1)       # the block
  j = _last_nonzero(mass, j)
  inner = jnp.take_along_axis(p, j[:, None, None], axis=1)[:, 0]           # [B, block]
  rest = target - (_take(cmass, j) - _take(mass, j))                       # mass left in it
  i = jnp.sum(jnp.cumsum(inner, axis=-1) < rest[:, None], axis=-1)
  i = _last_nonzero(inner, jnp.minimum(i, block - 1))                      # rounding at the top
  tok = (j * block + i).astype(jnp.int32)
  return tok, _take(logw, tok) - top[:, 0] - jnp.log(cmass[:, -1])


def _last_nonzero(p: jax.Array, idx: jax.Array) -> jax.Array:
  """``idx`` [B], moved down to the last entry of p [B, n] at or before it that is > 0 (a float
  rounding guard: the threshold can land past the mass by one ulp)."""
  ar = jnp.arange(p.shape[-1])
  return jnp.max(jnp.where((p > 0) & (ar <= idx[:, None]), ar, 0), axis=-1)


def _take(x: jax.Array, idx: jax.Array) -> jax.Array:
  return jnp.take_along_axis(x, idx[:, None], axis=-1)[:, 0]


def sample(model: DecoderLM, params, prompt: jax.Array, mask: jax.Array, row_ids: jax.Array,
           rng: jax.Array, cfg: SamplingConfig) -> dict[str, jax.Array]:
  """Samples up to ``cfg.max_new_tokens`` after each left-padded prompt [B, P] (pure; jit it).

  Returns tokens, logp, logp_t1 [B, N] (PAD / 0 after a row ended), mask [B, N] (1 on the
  response, ending token included), length [B] and finished [B] (ended its turn within N).
  """
  b, p_len = prompt.shape
  n = cfg.max_new_tokens
  # once, outside the loop (see Transformer.decode), each weight laid out by the rules in force
  params = decode_params(params, param_logical_axes(model, prompt[:1, :1], mask[:1, :1]))
  ends = cache_ends(n, cfg.cache_block)
  cache = init_cache(model.cfg, b, p_len + ends[0])
  kv_mask = jnp.zeros((b, p_len + ends[0]), jnp.int32).at[:, :p_len].set(mask.astype(jnp.int32))
  logits, cache = model.apply({"params": params}, prompt, positions_from_mask(mask), cache,
                              jnp.zeros((), jnp.int32), kv_mask, method=DecoderLM.decode_last)
  position = mask.astype(jnp.int32).sum(-1)                               # next position [B]
  stop = jnp.asarray(cfg.stop_ids, jnp.int32)
  greedy = cfg.temperature == 0
  untruncated_t1 = cfg.temperature == 1 and not cfg.top_k and cfg.top_p == 1

  def cond(end, c):
    return (c["t"] < end) & ~jnp.all(c["done"])

  def body(c):
    t = c["t"]
    logits = c["logits"]
    if greedy:
      tok = jnp.argmax(logits, axis=-1).astype(jnp.int32)
      lp = jnp.zeros((b,), jnp.float32)
    else:
      keys = jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(rng, r), t))(row_ids)
      tok, lp = draw(keys, sampling_logits(logits, cfg.temperature, cfg.top_k, cfg.top_p))
    if untruncated_t1:  # the sampling distribution is the model's
      lp1 = lp
    else:
      lp1 = _take(logits, tok) - jax.nn.logsumexp(logits.astype(jnp.float32), axis=-1)
    live = ~c["done"]
    tok = jnp.where(live, tok, PAD_ID)
    out = {"tokens": c["tokens"].at[:, t].set(tok),
           "logp": c["logp"].at[:, t].set(jnp.where(live, lp, 0.0)),
           "logp_t1": c["logp_t1"].at[:, t].set(jnp.where(live, lp1, 0.0)),
           "length": c["length"] + live.astype(jnp.int32),
           "done": c["done"] | (live & jnp.isin(tok, stop))}
    slot = p_len + t
    kvm = jax.lax.dynamic_update_slice(c["kv_mask"], jnp.ones((b, 1), jnp.int32), (0, slot))
    logits, cache = model.apply({"params": params}, tok[:, None], c["position"][:, None],
                                c["cache"], slot, kvm, method=DecoderLM.decode_last)
    return {**out, "t": t + 1, "logits": logits, "cache": cache, "kv_mask": kvm,
            "position": c["position"] + 1}

  zeros_f = jnp.zeros((b, n), jnp.float32)
  init = {"t": jnp.zeros((), jnp.int32), "logits": logits, "cache": cache, "kv_mask": kv_mask,
          "position": position, "tokens": jnp.full((b, n), PAD_ID, jnp.int32),
          "logp": zeros_f, "logp_t1": zeros_f, "length": jnp.zeros((b,), jnp.int32),
          "done": jnp.zeros((b,), bool)}
  c = init
  for i, end in enumerate(ends):  # one loop per cache size (see cache_ends)
    if i:  # P + ends[i - 1] slots → P + end: zeros, and slots no query may see yet
      c = {**c, "cache": grow_cache(c["cache"], end - ends[i - 1]),
           "kv_mask": jnp.pad(c["kv_mask"], ((0, 0), (0, end - ends[i - 1])))}
    c = jax.lax.while_loop(functools.partial(cond, end), body, c)
  return {"tokens": c["tokens"], "logp": c["logp"], "logp_t1": c["logp_t1"],
          "mask": (jnp.arange(n)[None] < c["length"][:, None]).astype(jnp.int32),
          "length": c["length"], "finished": c["done"]}


def bucket(length: int, buckets: Sequence[int] = DEFAULT_BUCKETS) -> int:
  """The smallest bucket that holds a prompt of ``length`` tokens."""
  for b in sorted(buckets):
    if length <= b:
      return b
  raise ValueError(f"a prompt of {length} tokens is longer than the largest bucket "
                   f"{max(buckets)}; cut prompts from the left or add a bucket")


class Sampler:
  """Jitted, sharded sampling for one model on one mesh: one compiled program per (bucket,
  batch). ``params`` come sharded as in training and are copied once per call into the decode
  layout (``sharding.decode_rules``: weights split on output dimensions, so no decode step
  gathers a weight); prompts over (data, fsdp)."""

  def __init__(self, model: DecoderLM, mesh, rules, cfg: SamplingConfig,
               buckets: Sequence[int] = DEFAULT_BUCKETS):
    self.model, self.mesh, self.rules, self.cfg = model, mesh, rules, cfg
    self.buckets = tuple(sorted(buckets))
    self._programs = {}  # (bucket, batch) → jitted program; dies with the sampler

  def _program(self, p_len: int, batch: int):
    key = (p_len, batch)
    if key not in self._programs:
      def run(params, prompt, mask, row_ids, rng):
        with nn.logical_axis_rules(sharding.decode_rules(self.rules)):
          return sample(self.model, params, prompt, mask, row_ids, rng, self.cfg)
      self._programs[key] = jax.jit(run, out_shardings=sharding.replicated(self.mesh))
    return self._programs[key]

  def __call__(self, params, prompts: np.ndarray, masks: np.ndarray, row_ids: np.ndarray,
               rng: jax.Array, rows_per_call: int | None = None) -> dict[str, np.ndarray]:
    """Left-padded prompts [B, T] (re-padded on the left to their bucket) → host arrays.

    ``rows_per_call`` (a divisor of B) samples the rows in calls of that many (the KV cache and
    prefill activations scale with it): each row keeps its global id, so its draws are the same
    as in one call of B.
    """
    k = rows_per_call or len(prompts)
    if k < len(prompts):
      if len(prompts) % k:
        raise ValueError(f"rows_per_call={k} does not divide the {len(prompts)} rows")
      chunks = [self(params, prompts[i:i + k], masks[i:i + k], row_ids[i:i + k], rng)
                for i in range(0, len(prompts), k)]
      return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    b, t = prompts.shape
    p_len = bucket(int(masks.sum(-1).max()) if b else t, self.buckets)
    prompts, masks = _left_pad(prompts, p_len), _left_pad(masks, p_len)
    arrays = sharding.whole_batch({"prompt": prompts, "mask": masks,
                                    "row_ids": np.asarray(row_ids, np.int32)}, self.mesh)
    out = self._program(p_len, b)(params, arrays["prompt"], arrays["mask"], arrays["row_ids"],
                                  rng)
    return jax.tree.map(np.asarray, jax.device_get(out))


def _left_pad(x: np.ndarray, length: int) -> np.ndarray:
  """Left-padded rows [B, T] → [B, length]: cut pad columns on the left, or add them."""
  t = x.shape[1]
  if t >= length:
    return x[:, t - length:]
  return np.concatenate([np.zeros((x.shape[0], length - t), x.dtype), x], axis=1)
