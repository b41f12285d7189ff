"""Decoder-only transformer trunk in Flax Linen (Bai et al. 2022, §3.1).

Pre-LayerNorm blocks, causal multi-head attention with a key-padding mask, rotary positions whose
ids come from the mask (so a left-padded row gives the same outputs as the unpadded row), layers
under ``nn.scan`` with a configurable ``jax.checkpoint`` policy, and an incremental decoding path
through an explicit KV cache that is passed in and returned (no mutable collections).

Every parameter carries logical axis names (``embed``, ``mlp``, ``heads``, ``kv``, ``vocab``,
``norm``, scanned ``layers``); the main activations are constrained with ``act_*`` names. The
config's ``axis_rules`` map them to mesh axes (``hh/sharding.py``).

Shapes: B batch, T query length, S key length (cache slots), D d_model, H heads, K d_head,
F d_ff, V vocab, L layers.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from hh.models import attention, cpu_ops
from hh.models.attention import attend_cached, attention_mask  # noqa: F401 (the model's API)
from hh.models.cpu_ops import accelerator_paths, contract, cpu_paths, einsum_f32acc  # noqa: F401

Array = jax.Array
# One (k, v) pair per layer, each [B, H, S, K] (head-major): separate buffers, so a decode loop updates each
# layer's slot in place instead of rewriting a stacked [L, ...] array.
KVCache = tuple[tuple[Array, Array], ...]

# Activations named inside a layer (``checkpoint_name``), for the remat policies that save some
_SAVED_DOTS = ("qkv", "attn_out")
_REMAT_POLICIES = {
    "full": None,  # save nothing but the layer input: recompute the whole layer
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
    # MaxText's choice: keep the attention projections' outputs, recompute the MLP (its [B, T, F]
    # hidden layer is the largest activation of a layer)
    "save_dots_except_mlp": jax.checkpoint_policies.save_only_these_names(*_SAVED_DOTS),
    # the same activations moved to host memory between the forward and the backward
    "offload": jax.checkpoint_policies.save_and_offload_only_these_names(
        names_which_can_be_saved=[], names_which_can_be_offloaded=list(_SAVED_DOTS),
        offload_src="device", offload_dst="pinned_host"),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Static model hyperparameters, built from ``config.model`` by ``from_config``."""
  vocab_size: int
  n_layer: int
  d_model: int
  n_head: int
  d_ff: int
  rope_theta: float = 10_000.0
  init_std: float = 0.02
  dtype: Any = jnp.float32
  param_dtype: Any = jnp.float32
  remat_policy: str = "none"
  gelu_approximate: bool = True  # tanh GELU; False: exact (erf) GELU, 14% faster on CPU
  attn_chunk: int = 0  # full forward: query blocks of this many tokens skip the masked keys; 0: off
  scan_unroll: int = 1  # layers per iteration of the scan over layers (≥ L: no loop at all)
  attention: str = "auto"  # attention.IMPLEMENTATIONS; auto: by backend (attention.resolve)
  # Architecture options: the defaults are hh's own model; GPT-NeoX (Pythia) and Llama set them
  # as ``configs/sizes.py:PUBLIC`` does (``hh/convert.py`` reads them from a config.json).
  norm: str = "layernorm"  # layernorm | rmsnorm
  norm_eps: float = 1e-6
  mlp: str = "gelu"  # gelu: wo(gelu(wi x)); swiglu: wo(silu(wg x) * wi x)
  n_kv_head: int = 0  # key/value heads; 0: n_head; fewer: grouped-query attention
  head_dim: int = 0  # 0: d_model / n_head
  rotary_pct: float = 1.0  # fraction of each head's dimensions rotated (GPT-NeoX: 0.25)
  rope_scaling: tuple = ()  # () or ("llama3", factor, low_freq_factor, high_freq_factor, orig_len)
  parallel_residual: bool = False  # x + attn(ln1 x) + mlp(ln2 x) (GPT-NeoX)
  attn_bias: bool = False  # biases on the query, key, value and output projections
  mlp_bias: bool = False   # biases on the MLP's projections
  tie_embeddings: bool = False  # the LM head multiplies by the embedding's transpose

  @property
  def d_head(self) -> int:
    return self.head_dim or self.d_model // self.n_head

  @property
  def kv_heads(self) -> int:
    return self.n_kv_head or self.n_head

  @property
  def rotary_dim(self) -> int:
    """The leading dimensions of each head that rotary positions turn (even)."""
    return int(self.d_head * self.rotary_pct) // 2 * 2

  @classmethod
  def from_config(cls, model_cfg, vocab_size: int) -> "ModelConfig":
    """Validates ``config.model`` and names the offending key on bad values."""
    for key in ("dtype", "param_dtype"):
      if model_cfg[key] not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"config.model.{key}={model_cfg[key]!r}; allowed: float32, bfloat16, "
                         "float16")
    if model_cfg.remat_policy not in ("none", *_REMAT_POLICIES):
      raise ValueError(f"config.model.remat_policy={model_cfg.remat_policy!r}; allowed: none, "
                       f"{', '.join(_REMAT_POLICIES)}")
    attention.resolve(model_cfg.get("attention", "auto"), "cpu", model_cfg.dtype)  # a valid name
    if model_cfg.attn_chunk < 0:
      raise ValueError(f"config.model.attn_chunk={model_cfg.attn_chunk}; expected ≥ 0 (0: off)")
    if model_cfg.get("scan_unroll", 1) < 1:
      raise ValueError(f"config.model.scan_unroll={model_cfg.scan_unroll}; expected ≥ 1")
    get = model_cfg.get
    if model_cfg.d_model % model_cfg.n_head and not get("head_dim", 0):
      raise ValueError(f"config.model.d_model={model_cfg.d_model} is not divisible by "
                       f"config.model.n_head={model_cfg.n_head}")
    for key, allowed in (("norm", ("layernorm", "rmsnorm")), ("mlp", ("gelu", "swiglu"))):
      if get(key, allowed[0]) not in allowed:
        raise ValueError(f"config.model.{key}={get(key)!r}; allowed: {', '.join(allowed)}")
    n_kv = get("n_kv_head", 0)
    if n_kv < 0 or (n_kv and model_cfg.n_head % n_kv):
      raise ValueError(f"config.model.n_kv_head={n_kv} does not divide config.model.n_head="
                       f"{model_cfg.n_head}; allowed: 0 (= n_head) or a divisor of it")
    if not 0 < get("rotary_pct", 1.0) <= 1:
      raise ValueError(f"config.model.rotary_pct={get('rotary_pct')}; allowed: (0, 1]")
    scaling = tuple(get("rope_scaling", ()) or ())
    if scaling and (scaling[0] != "llama3" or len(scaling) != 5):
      raise ValueError(f"config.model.rope_scaling={scaling!r}; allowed: () or ('llama3', factor, "
                       "low_freq_factor, high_freq_factor, original_max_len)")
    model_vocab = get("vocab_size", 0) or vocab_size
    if model_vocab < vocab_size:
      raise ValueError(f"config.model.vocab_size={model_vocab} is smaller than the tokenizer's "
                       f"{vocab_size} pieces; allowed: 0 (the tokenizer's) or ≥ {vocab_size}")
    return cls(vocab_size=model_vocab, n_layer=model_cfg.n_layer, d_model=model_cfg.d_model,
               n_head=model_cfg.n_head, d_ff=model_cfg.d_ff, rope_theta=model_cfg.rope_theta,
               init_std=model_cfg.init_std, dtype=jnp.dtype(model_cfg.dtype),
               param_dtype=jnp.dtype(model_cfg.param_dtype),
               remat_policy=model_cfg.remat_policy,
               gelu_approximate=model_cfg.gelu_approximate,
               attn_chunk=model_cfg.attn_chunk, scan_unroll=get("scan_unroll", 1),
               attention=get("attention", "auto"), norm=get("norm", "layernorm"),
               norm_eps=get("norm_eps", 1e-6), mlp=get("mlp", "gelu"), n_kv_head=n_kv,
               head_dim=get("head_dim", 0), rotary_pct=get("rotary_pct", 1.0),
               rope_scaling=scaling, parallel_residual=get("parallel_residual", False),
               attn_bias=get("attn_bias", False), mlp_bias=get("mlp_bias", False),
               tie_embeddings=get("tie_embeddings", False))


def positions_from_mask(mask: Array) -> Array:
  """Position ids [B, T] for a (left- or right-) padded mask [B, T]: 0 at the first real token."""
  return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)


def rope_frequencies(dim: int, theta: float, scaling: tuple = ()) -> Array:
  """The rotary frequencies [dim/2]: theta^(−2i/dim); with ``("llama3", factor, low, high,
  original_len)`` the long wavelengths divided by ``factor`` and the band between low and high
  interpolated, as Llama 3.1 does (Meta's reference implementation)."""
  half = dim // 2
  freq = theta ** (-jnp.arange(half, dtype=jnp.float32) / half)   # [dim/2]
  if not scaling:
    return freq
  _, factor, low, high, original = scaling
  wavelen = 2 * math.pi / freq
  smooth = (original / wavelen - low) / (high - low)
  mid = (1 - smooth) * freq / factor + smooth * freq
  return jnp.where(wavelen > original / low, freq / factor,
                   jnp.where(wavelen < original / high, freq, mid))


def rope_tables(positions: Array, d_head: int, theta: float,
                scaling: tuple = ()) -> tuple[Array, Array]:
  """(sin, cos) [B, T, 1, R/2] of the rotary angles (R = ``d_head``, the rotated dimensions);
  computed once per forward, shared by layers.

  The optimization barrier keeps them computed once: without it XLA on CPU fuses sin and cos
  into every rotation and evaluates them per element of q and k (H times over, forward and
  backward, every layer)."""
  freq = rope_frequencies(d_head, theta, scaling)                    # [R/2]
  angle = positions[..., None].astype(jnp.float32) * freq          # [B, T, R/2]
  sin, cos = jax.lax.optimization_barrier((jnp.sin(angle), jnp.cos(angle)))
  return sin[:, :, None, :], cos[:, :, None, :]


def rope(x: Array, tables: tuple[Array, Array]) -> Array:
  """Rotary embedding (Su et al. 2021), half-split form, on the first R dimensions of each head
  (the rest pass through: partial rotary). x [B, T, H, K]; tables [B, T, 1, R/2]."""
  sin, cos = tables
  rot = 2 * sin.shape[-1]
  if rot < x.shape[-1]:
    return jnp.concatenate([rope(x[..., :rot], tables), x[..., rot:]], axis=-1)
  x1, x2 = jnp.split(x.astype(jnp.float32), 2, axis=-1)
  out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
  return out.astype(x.dtype)

def _rotary(cfg: "ModelConfig", positions: Array) -> tuple[Array, Array]:
  return rope_tables(positions, cfg.rotary_dim, cfg.rope_theta, cfg.rope_scaling)


def repeat_kv(x: Array, n_head: int, axis: int) -> Array:
  """Grouped-query attention: each of x's key/value heads (on ``axis``) repeated for the
  n_head / kv_heads query heads that share it; unchanged when they are equal."""
  groups = n_head // x.shape[axis]
  return x if groups == 1 else jnp.repeat(x, groups, axis=axis)


def take_rows(x: Array, index: Array) -> Array:
  """x [B, T, ...] at one position per row, index [B] → [B, 1, ...]."""
  index = index.astype(jnp.int32).reshape(-1, 1, *([1] * (x.ndim - 2)))
  return jnp.take_along_axis(x, index, axis=1)


def _backend() -> str:
  """The backend the program is traced for: the default one, or the accelerator's under
  ``accelerator_paths`` (hh.plan compiles a TPU/GPU step on CPU devices: hh's blockwise
  attention, which compiles anywhere and keeps what they keep, stands in for cuDNN's and
  Pallas's kernels there)."""
  return jax.default_backend() if cpu_ops.cpu_paths() or jax.default_backend() != "cpu" else "plan"


def attend(q: Array, k: Array, v: Array, mask: Array, chunk: int = 0,
           implementation: str = "reference") -> Array:
  """Attention of a full forward by ``implementation`` (``attention.resolve``'s result):
  q [B, T, H, K] (scaled), k, v [B, S, H, K], mask [B, 1, T, S] → [B, T, H, K]. The reference
  takes hh's own form for bf16 on CPU (``cpu_ops.attend_f32acc``); ``chunk``: the reference's
  causal query blocks. The Pallas kernel needs a full causal forward (T = S), whose last mask
  row is the key padding; anything else falls back to XLA's fused form."""
  if implementation == "reference":
    if cpu_ops.cpu_bf16(q, k, v):
      return cpu_ops.attend_f32acc(q, k, v, mask, chunk)
    return attention.attend(q, k, v, mask, chunk)
  if implementation == "blockwise":
    return attention.blockwise(q, k, v, mask)
  if implementation == "pallas":
    if q.shape[1] == k.shape[1]:
      return attention.pallas_tpu(q, k, v, mask[:, 0, -1, :])
    implementation = "xla"
  return attention.fused(q, k, v, mask, implementation)


def _dense_init(std: float):
  return nn.initializers.normal(stddev=std)


def _dense(x: Array, w: Array, n_in: int = 1) -> Array:
  """Contracts the last ``n_in`` axes of x with the first ``n_in`` axes of w, as one 2-D matmul.

  Flattening the batch and length axes first matters on CPU: XLA then computes the weight
  gradient as one [in, B·T] × [B·T, out] matmul (2.6 s → 1.3 s for the 13M LM head) instead of a
  contraction over two axes. On accelerators it compiles to the same dot.
  """
  lead, d_in = x.shape[:x.ndim - n_in], w.shape[:n_in]
  d_out = w.shape[n_in:]
  y = contract("ti,io->to", x.reshape(-1, math.prod(d_in)), w.reshape(math.prod(d_in), -1),
               split=lead[0] if len(lead) > 1 else 2)
  return y.reshape(*lead, *d_out)


def _weight(module: nn.Module, name: str, shape: tuple[int, ...], axes: tuple[str, ...],
            std: float) -> Array:
  """A normal-initialised kernel with logical axis names, cast to the compute dtype."""
  w = module.param(name, nn.with_logical_partitioning(_dense_init(std), axes), shape,
                   module.cfg.param_dtype)
  return w.astype(module.cfg.dtype)


def _project(module: nn.Module, x: Array, name: str, shape: tuple[int, ...],
             axes: tuple[str, ...], std: float, bias: bool, n_in: int = 1) -> Array:
  """x times the kernel ``name`` [in..., out...], plus a zero-initialised bias ``name_bias``
  [out...] when ``bias`` (GPT-NeoX's projections carry one)."""
  y = _dense(x, _weight(module, name, shape, axes, std), n_in)
  if not bias:
    return y
  b = module.param(f"{name}_bias", nn.with_logical_partitioning(nn.initializers.zeros,
                                                                axes[n_in:]),
                   shape[n_in:], module.cfg.param_dtype)
  return y + b.astype(y.dtype)


class Attention(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, rotary: tuple[Array, Array], mask: Array,
               cache: KVCache | None, cache_index: Array | None, q_index: Array | None = None):
    """x [B, T, D] → [B, T, D]; with ``q_index`` [B] only that query per row → [B, 1, D]."""
    cfg = self.cfg
    qkv_shape, qkv_axes = (cfg.d_model, cfg.n_head, cfg.d_head), ("embed", "heads", "kv")
    kv_shape = (cfg.d_model, cfg.kv_heads, cfg.d_head)
    out_std = cfg.init_std / (2 * cfg.n_layer) ** 0.5
    x = x.astype(cfg.dtype)
    q_rotary = rotary
    if q_index is not None:  # keys and values at every position, the query at one
      q_rotary = tuple(take_rows(t, q_index) for t in rotary)
      mask = take_rows(jnp.swapaxes(mask, 1, 2), q_index).swapaxes(1, 2)  # [B, 1, 1, S]
    xq = x if q_index is None else take_rows(x, q_index)
    bias = cfg.attn_bias
    q = _project(self, xq, "query", qkv_shape, qkv_axes, cfg.init_std, bias)  # [B, T, H, K]
    k = _project(self, x, "key", kv_shape, qkv_axes, cfg.init_std, bias)  # [B, S, Hkv, K]
    v = _project(self, x, "value", kv_shape, qkv_axes, cfg.init_std, bias)
    q, k, v = (checkpoint_name(t, "qkv") for t in (q, k, v))
    q = rope(q, q_rotary) * jnp.asarray(cfg.d_head ** -0.5, cfg.dtype)  # [B, T, H, K], scaled
    k = rope(k, rotary)
    q = nn.with_logical_constraint(q, ("act_batch", "act_len", "act_heads", "act_kv"))
    if cache is not None:  # write this step's keys at slots [cache_index, cache_index + T)
      zero = jnp.zeros((), jnp.int32)
      start = (zero, zero, cache_index.astype(jnp.int32), zero)
      k, v = (jax.lax.dynamic_update_slice(c, jnp.swapaxes(x, 1, 2).astype(c.dtype), start)
              for c, x in zip(cache, (k, v)))                              # [B, H, S, K]
      k = nn.with_logical_constraint(k, CACHE_AXES)
      v = nn.with_logical_constraint(v, CACHE_AXES)
      cache = (k, v)
      k, v = (repeat_kv(t, cfg.n_head, 1) for t in (k, v))
      out = attend_cached(q, k.astype(cfg.dtype), v.astype(cfg.dtype), mask)
    else:
      k, v = (repeat_kv(t, cfg.n_head, 2) for t in (k, v))
      k = nn.with_logical_constraint(k, ("act_batch", "act_kv_len", "act_heads", "act_kv"))
      v = nn.with_logical_constraint(v, ("act_batch", "act_kv_len", "act_heads", "act_kv"))
      chunk = cfg.attn_chunk if q_index is None else 0
      impl = attention.resolve(cfg.attention, _backend(), cfg.dtype)
      out = attend(q, k.astype(cfg.dtype), v.astype(cfg.dtype), mask, chunk, impl)  # [B,T,H,K]
    out = _project(self, out, "out", (cfg.n_head, cfg.d_head, cfg.d_model),
                   ("heads", "kv", "embed"), out_std, bias, n_in=2)
    return checkpoint_name(out, "attn_out"), cache


class Mlp(nn.Module):
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.cfg
    x = x.astype(cfg.dtype)
    up = (cfg.d_model, cfg.d_ff), ("embed", "mlp"), cfg.init_std, cfg.mlp_bias
    h = _project(self, x, "wi", *up)                                         # [B, T, F]
    if cfg.mlp == "swiglu":
      h = jax.nn.silu(_project(self, x, "wg", *up)) * h
    else:
      # recomputed from its input in the backward (elementwise, as PyTorch's GELU backward):
      # autodiff of the tanh form would keep five [B, T, F] intermediates per layer
      h = jax.checkpoint(functools.partial(jax.nn.gelu, approximate=cfg.gelu_approximate),
                         prevent_cse=False)(h)
    h = nn.with_logical_constraint(h, ("act_batch", "act_len", "act_mlp"))
    return _project(self, h, "wo", (cfg.d_ff, cfg.d_model), ("mlp", "embed"),
                    cfg.init_std / (2 * cfg.n_layer) ** 0.5, cfg.mlp_bias)


def _layer_norm(cfg: ModelConfig, name: str | None = None) -> nn.Module:
  """The config's norm: LayerNorm (scale and bias) or RMSNorm (scale only)."""
  scale = nn.with_logical_partitioning(nn.initializers.ones, ("norm",))
  if cfg.norm == "rmsnorm":
    return nn.RMSNorm(epsilon=cfg.norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      name=name, scale_init=scale)
  return nn.LayerNorm(epsilon=cfg.norm_eps, dtype=cfg.dtype, param_dtype=cfg.param_dtype,
                      name=name, scale_init=scale,
                      bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("norm",)))


class Block(nn.Module):
  """One pre-LN layer; the scan carry is the residual stream x [B, T, D]."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, cache: KVCache | None, rotary: tuple[Array, Array], mask: Array,
               cache_index: Array | None, q_index: Array | None = None):
    """With ``q_index`` [B] the layer's output is needed at one position per row: x → [B, 1, D]."""
    h = _layer_norm(self.cfg, "ln_attn")(x)
    attn, cache = Attention(self.cfg, name="attn")(h, rotary, mask, cache, cache_index, q_index)
    if q_index is not None:
      x = take_rows(x, q_index)
    if self.cfg.parallel_residual:  # both branches read the layer's input (GPT-NeoX)
      x = x + attn + Mlp(self.cfg, name="mlp")(_layer_norm(self.cfg, "ln_mlp")(x))
    else:
      x = x + attn
      x = x + Mlp(self.cfg, name="mlp")(_layer_norm(self.cfg, "ln_mlp")(x))
    x = nn.with_logical_constraint(x, ("act_batch", "act_len", "act_embed"))
    return x, cache


def _block_class(cfg: ModelConfig):
  """Block, under the config's remat policy."""
  if cfg.remat_policy == "none":
    return Block
  return nn.remat(Block, policy=_REMAT_POLICIES[cfg.remat_policy], prevent_cse=False)


def _scanned_blocks(cfg: ModelConfig, length: int):
  """The (remat) Block class scanned over ``length`` layers, params stacked on a leading
  ``layers`` axis; ``cfg.scan_unroll`` layers per loop iteration. Unrolled, XLA on CPU no longer
  zero-fills and slices the scan's stacked activations for the backward pass: the 13M PM
  step's non-matmul model work fell from 3.1 to 1.4 s of thunk time and the step by 7–10%
  (``benchmarks/profile_step.py``; docs/history.md)."""
  return nn.scan(_block_class(cfg), variable_axes={"params": 0}, split_rngs={"params": True},
                 in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=length,
                 unroll=max(1, min(cfg.scan_unroll, length)),
                 metadata_params={nn.PARTITION_NAME: "layers"})


class Transformer(nn.Module):
  """Embedding → L scanned blocks → final LayerNorm, with three explicit entry points:

  * ``__call__(tokens, mask)``: the full forward, hidden states [B, T, D]; positions from the
    mask (left or right padding), causal query blocks when ``cfg.attn_chunk`` is set.
  * ``decode(tokens, positions, cache, cache_index, kv_mask)``: cached decoding. ``cache`` (k, v)
    [L, B, S, H, K], ``kv_mask`` [B, S] over all cache slots, ``cache_index`` the slot of
    tokens[:, 0], explicit ``positions`` [B, T]; returns (hidden [B, T, D], new cache).
  * ``read_out(tokens, mask, index)``: hidden states [B, 1, D] at one position per row (the PM's
    EOC token). The last layer computes keys and values at every position but its query,
    attention output and MLP only there: a quarter less work for a 4-layer PM, same numbers.

  The parameter tree (``embed``, ``layers`` stacked [L, ...], ``ln_final``) is the same for all
  three, so one checkpoint serves training, sampling and scoring.
  """
  cfg: ModelConfig

  def setup(self):
    cfg = self.cfg
    self.embed = nn.Embed(cfg.vocab_size, cfg.d_model, dtype=cfg.dtype,
                          param_dtype=cfg.param_dtype,
                          embedding_init=nn.with_logical_partitioning(
                              _dense_init(cfg.init_std), ("vocab", "embed")))
    self.layers = _scanned_blocks(cfg, cfg.n_layer)(cfg)
    self.ln_final = _layer_norm(cfg)

  def _embed(self, tokens: Array) -> Array:
    x = self.embed(tokens)                                              # [B, T, D]
    return nn.with_logical_constraint(x, ("act_batch", "act_len", "act_embed"))

  def __call__(self, tokens: Array, mask: Array) -> Array:
    """Full forward: tokens, mask [B, T] → hidden [B, T, D]."""
    rotary = _rotary(self.cfg, positions_from_mask(mask))
    x, _ = self.layers(self._embed(tokens), None, rotary,
                       attention_mask(mask, tokens.shape[1], 0), None)
    return self.ln_final(x)

  def decode(self, tokens: Array, positions: Array, cache: KVCache, cache_index: Array,
             kv_mask: Array) -> tuple[Array, KVCache]:
    """Cached decoding: tokens, positions [B, T] written at slots [cache_index, +T).

    The layers run one by one (unrolled, not scanned), each on its own cache pair, with the
    layer's params taken from the stacked tree or — what a sampling loop should pass — from
    params prepared once by ``decode_params``: slicing stacked weights inside a loop copies them
    every step, and a scanned cache rewrites all L layers' buffers (on CPU these made a 13M
    decode step 3× its matmul time).
    """
    cfg = self.cfg
    rotary = _rotary(cfg, positions)
    mask = attention_mask(kv_mask, tokens.shape[1], cache_index)
    x = self._embed(tokens)
    layers = nn.unbox(self.variables["params"]["layers"])
    block = Block(cfg, parent=None)
    new_cache = []
    for i in range(cfg.n_layer):
      p = layers[str(i)] if UNSTACKED in layers else jax.tree.map(lambda a, i=i: a[i], layers)
      x, kv = block.apply({"params": p}, x, cache[i], rotary, mask, cache_index)
      new_cache.append(kv)
    return self.ln_final(x), tuple(new_cache)

  def residual_stream(self, tokens: Array, mask: Array) -> tuple[Array, ...]:
    """The residual stream after the embedding and after each layer: L + 1 arrays [B, T, D]
    (entry ℓ is what layer ℓ + 1 reads; the last is the input of ``ln_final``).

    The stacked layers are applied one by one through the same Block as the scan (activations
    for OOD detection, Bai et al. 2022, §5.4); ``__call__`` equals ``ln_final`` of the last entry.
    """
    if self.is_initializing():
      self(tokens, mask)
    cfg = self.cfg
    rotary = _rotary(cfg, positions_from_mask(mask))
    attn_mask = attention_mask(mask, tokens.shape[1], 0)
    x = self._embed(tokens)
    stacked = nn.unbox(self.variables["params"]["layers"])               # leaves [L, ...]
    block = _block_class(cfg)(cfg, parent=None)
    out = [x]
    for i in range(cfg.n_layer):
      x, _ = block.apply({"params": jax.tree.map(lambda a, i=i: a[i], stacked)}, x, None,
                         rotary, attn_mask, None)
      out.append(x)
    return tuple(out)

  def read_out(self, tokens: Array, mask: Array, index: Array) -> Array:
    """Hidden states at ``index`` [B] → [B, 1, D]: layers 0…L−2 over all positions, then layer
    L−1 at ``index`` only.

    Applies the stacked ``layers`` params functionally: the first L−1 slices through the same
    scan, the last slice through one Block.
    """
    if self.is_initializing():  # create the parameters through the full forward
      return take_rows(self(tokens, mask), index)
    cfg = self.cfg
    rotary = _rotary(cfg, positions_from_mask(mask))
    attn_mask = attention_mask(mask, tokens.shape[1], 0)
    x = self._embed(tokens)
    stacked = nn.unbox(self.variables["params"]["layers"])               # leaves [L, ...]
    if cfg.n_layer > 1:
      first = jax.tree.map(lambda a: a[:-1], stacked)
      x, _ = _scanned_blocks(cfg, cfg.n_layer - 1)(cfg, parent=None).apply(
          {"params": first}, x, None, rotary, attn_mask, None)
    last = jax.tree.map(lambda a: a[-1], stacked)
    x, _ = _block_class(cfg)(cfg, parent=None).apply({"params": last}, x, None, rotary,
                                                     attn_mask, None, index)
    return self.ln_final(x)


def head_logits(x: Array, w: Array) -> Array:
  """The LM head's logits float32 [B, T, V] from x [B, T, D] and its kernel w [D, V], both in the
  compute dtype (the product is in that dtype, then widened)."""
  logits = _dense(x, w)
  logits = nn.with_logical_constraint(logits, ("act_batch", "act_len", "act_vocab"))
  return logits.astype(jnp.float32)


class LMHead(nn.Module):
  """Projection to the vocabulary; logits in float32 [B, T, V]. Its own kernel [D, V], or with
  ``cfg.tie_embeddings`` the embedding's transpose, passed in as ``tied`` [D, V]."""
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, tied: Array | None = None) -> Array:
    w = tied.astype(self.cfg.dtype) if tied is not None else self.kernel()
    return head_logits(x.astype(self.cfg.dtype), w)

  @nn.nowrap
  def kernel(self) -> Array:
    return _weight(self, "kernel", (self.cfg.d_model, self.cfg.vocab_size), ("embed", "vocab"),
                   self.cfg.init_std)


class ScalarHead(nn.Module):
  """Linear d_model → 1 (the PM score and the PPO value; Bai et al. 2022, App. A.2), float32.

  ``index`` [B] picks one position per row (e.g. the end-of-context token) → [B]; without it the
  head is read at every position → [B, T]. Zero-initialised, so initial scores are exactly 0.
  """
  cfg: ModelConfig

  @nn.compact
  def __call__(self, x: Array, index: Array | None = None) -> Array:
    if index is not None:
      x = jnp.take_along_axis(x, index[:, None, None].astype(jnp.int32), axis=1)  # [B, 1, D]
    w = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros, ("embed",)),
                   (self.cfg.d_model,), self.cfg.param_dtype)
    bias = self.param("bias", nn.with_logical_partitioning(nn.initializers.zeros, ()), (),
                      self.cfg.param_dtype)
    out = jnp.einsum("b...d,d->b...", x.astype(jnp.float32), w.astype(jnp.float32)) + bias
    return out[:, 0] if index is not None else out


class DecoderLM(nn.Module):
  """Trunk + LM head. ``__call__(tokens, mask)`` → logits [B, T, V] float32;
  ``decode(tokens, positions, cache, cache_index, kv_mask)`` → (logits [B, T, V], cache)."""
  cfg: ModelConfig

  def setup(self):
    self.trunk = Transformer(self.cfg)
    if not self.cfg.tie_embeddings:
      self.head = LMHead(self.cfg)

  def _logits(self, x: Array) -> Array:
    if self.cfg.tie_embeddings:
      return LMHead(self.cfg, parent=None).apply({}, x, self._tied())
    return self.head(x)

  def _tied(self) -> Array:
    return nn.unbox(self.trunk.embed.variables["params"]["embedding"]).T  # [D, V]

  def __call__(self, tokens: Array, mask: Array | None = None) -> Array:
    """tokens [B, T], mask [B, T] (default: all real) → logits [B, T, V] float32."""
    if mask is None:
      mask = jnp.ones(tokens.shape, jnp.int32)
    return self._logits(self.trunk(tokens, mask))

  def head_inputs(self, tokens: Array, mask: Array) -> tuple[Array, Array]:
    """(the trunk's output [B, T, D], the head's kernel [D, V]), both in the compute dtype: what
    ``__call__`` multiplies, for the chunked heads (hh/models/head.py, ``lm.step``)."""
    return self.trunk(tokens, mask).astype(self.cfg.dtype), self.head_kernel()

  def head_kernel(self) -> Array:
    """The LM head's kernel [D, V] in the compute dtype (the embedding's transpose when tied)."""
    if self.cfg.tie_embeddings:
      return self._tied().astype(self.cfg.dtype)
    return nn.unbox(self.head.variables["params"]["kernel"]).astype(self.cfg.dtype)

  def decode(self, tokens: Array, positions: Array, cache: KVCache, cache_index: Array,
             kv_mask: Array) -> tuple[Array, KVCache]:
    x, cache = self.trunk.decode(tokens, positions, cache, cache_index, kv_mask)
    return self._logits(x), cache

  def residual_stream(self, tokens: Array, mask: Array) -> tuple[Array, ...]:
    """The trunk's residual stream, L + 1 arrays [B, T, D] (``Transformer.residual_stream``)."""
    return self.trunk.residual_stream(tokens, mask)

  def decode_last(self, tokens: Array, positions: Array, cache: KVCache, cache_index: Array,
                  kv_mask: Array) -> tuple[Array, KVCache]:
    """``decode`` with the LM head at the last position only: (logits [B, V], cache) — the
    prefill of a sampler needs no logits for the prompt."""
    x, cache = self.trunk.decode(tokens, positions, cache, cache_index, kv_mask)
    return self._logits(x[:, -1:])[:, 0], cache


class PreferenceModel(nn.Module):
  """Trunk + scalar head read at one index per row (the EOC token, Bai et al. 2022, App. A.2): scores [B]."""
  cfg: ModelConfig

  def setup(self):
    self.trunk = Transformer(self.cfg)
    self.head = ScalarHead(self.cfg)

  def __call__(self, tokens: Array, mask: Array, index: Array) -> Array:
    return self.head(self.trunk.read_out(tokens, mask, index))[:, 0]


class ValueModel(nn.Module):
  """Trunk + scalar head at every position: PPO's value V [B, T] (float32). Its parameter tree is
  the PreferenceModel's, so a PM's checkpoint initialises it (the paper's choice, Bai et al. 2022, §4.1)."""
  cfg: ModelConfig

  def setup(self):
    self.trunk = Transformer(self.cfg)
    self.head = ScalarHead(self.cfg)

  def __call__(self, tokens: Array, mask: Array) -> Array:
    return self.head(self.trunk(tokens, mask))


# Logical names of a layer's cache axes [B, H, S, K] (rules in config.axis_rules).
CACHE_AXES = ("cache_batch", "cache_heads", "cache_len", "cache_kv")
UNSTACKED = "0"  # ``decode_params`` keys the layers "0" … "L−1"


def init_cache(cfg: ModelConfig, batch: int, max_len: int, dtype=None) -> KVCache:
  """Zeros for one (k, v) pair per layer, each [B, Hkv, max_len, K], in the compute dtype by
  default, constrained to the cache's logical axes (``CACHE_AXES``) under a mesh and rules."""
  shape = (batch, cfg.kv_heads, max_len, cfg.d_head)
  dtype = dtype or cfg.dtype
  return tuple(tuple(nn.with_logical_constraint(jnp.zeros(shape, dtype), CACHE_AXES)
                     for _ in range(2)) for _ in range(cfg.n_layer))


def grow_cache(cache: KVCache, extra: int) -> KVCache:
  """``cache`` with ``extra`` zero slots appended to each layer's k and v: [B, Hkv, S, K] →
  [B, Hkv, S + extra, K], constrained to ``CACHE_AXES`` as ``init_cache`` makes them."""
  pad = ((0, 0), (0, 0), (0, extra), (0, 0))
  return jax.tree.map(lambda c: nn.with_logical_constraint(jnp.pad(c, pad), CACHE_AXES), cache)


def decode_params(params: dict, axes=None) -> dict:
  """``params`` of a DecoderLM / PreferenceModel laid out for decoding: the stacked
  ``trunk/layers`` [L, ...] split into layers "0" … "L−1" (one copy of the layer weights), what
  ``decode`` reads fastest. Call it once, outside a decoding loop; the full forward needs the
  original tree.

  ``axes`` (``param_logical_axes``): every weight's logical axes; each weight (each layer's
  copy without the leading ``layers`` axis) is then constrained to them under the rules in
  force — the sampler's ``sharding.decode_rules`` — so under a mesh it is resharded once here
  and no decode step has to gather it."""
  stacked = nn.unbox(params["trunk"]["layers"])
  n = jax.tree.leaves(stacked)[0].shape[0]
  layers = {str(i): jax.tree.map(lambda a, i=i: a[i], stacked) for i in range(n)}
  out = {**nn.unbox(params), "trunk": {**nn.unbox(params["trunk"]), "layers": layers}}
  if axes is None:
    return out
  is_spec = lambda x: isinstance(x, jax.sharding.PartitionSpec)  # noqa: E731
  constrain = lambda spec, a, cut=0: nn.with_logical_constraint(a, tuple(spec)[cut:])  # noqa: E731
  layer_axes = axes["trunk"]["layers"]
  rest = {**axes, "trunk": {k: v for k, v in axes["trunk"].items() if k != "layers"}}
  out_rest = {**out, "trunk": {k: v for k, v in out["trunk"].items() if k != "layers"}}
  out = jax.tree.map(constrain, rest, out_rest, is_leaf=is_spec)
  out["trunk"]["layers"] = {i: jax.tree.map(lambda s, a: constrain(s, a, 1), layer_axes, layer,
                                            is_leaf=is_spec) for i, layer in layers.items()}
  return out


def param_logical_axes(model: nn.Module, *example) -> Any:
  """``model``'s params tree with each weight's logical axes (a PartitionSpec of names), from
  abstract shapes (``example``: arguments of ``model.init``)."""
  boxed = jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *example))["params"]
  return nn.get_partition_spec(boxed)
