"""What every config shares: argument parsing, the model/mesh/rules block, and the blocks each
stage's sub-config is made of (optimizer, loop).

A config is ``base(size)`` (seed, model, tokenizer, mesh, axis_rules, world, data_dirs,
progress) plus one sub-config per stage it runs (``config.lm``, ``config.pm``, later
``config.cd``, ``config.ppo``): each stage reads only its own sub-config and the shared blocks.
"""
from __future__ import annotations

import os
import pathlib

import ml_collections
from ml_collections import config_dict

from configs import sizes, world

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# A folder holding hh-rlhf/ (the official repository's layout) and wikitext-2/ (the raw files):
# the default of config.data_dirs when set. The main job needs neither (the synthetic world).
DATA_DIR = pathlib.Path(os.environ["HH_DATA_DIR"]) if os.environ.get("HH_DATA_DIR") else None


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses ``"size=13M,runlocal"`` into a ConfigDict typed by ``defaults``.

  A bare word sets a boolean default to True. A key not in ``defaults`` is an error naming
  the allowed keys, so ``configs/lm.py:sise=13M`` fails instead of silently being ignored.
  """
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, sep, value = part.partition("=")
    if key not in defaults:
      raise ValueError(f"config argument {key!r} unknown; allowed: {sorted(defaults)}")
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif isinstance(default, bool):
      if value.lower() not in ("true", "false", "1", "0"):
        raise ValueError(f"config argument {key}={value!r}; allowed: True, False")
      out[key] = value.lower() in ("1", "true")
    else:
      out[key] = type(default)(value)
  return out


def paper_scale(size: str) -> bool:
  return size not in sizes.CPU_SIZES


def pretrain_lr(size: str) -> float:
  """The LM-pretraining peak LR; the PM and RL stages use the paper's multiples of it."""
  return 3e-4 if paper_scale(size) else 3e-3  # the paper's pretraining LR is unpublished


def model_config(size: str) -> ml_collections.ConfigDict:
  """The ``config.model`` block for a size name (``configs.sizes.SIZES`` or ``PUBLIC``)."""
  if os.path.isdir(size):  # a model directory: an imported / Hugging Face checkpoint, an LM run
    arch = _directory_model(size)
    n_layer, d_model, n_head, d_ff = (arch[k] for k in ("n_layer", "d_model", "n_head", "d_ff"))
  elif size in sizes.PUBLIC:
    arch = sizes.PUBLIC[size]
    n_layer, d_model, n_head, d_ff = (arch[k] for k in ("n_layer", "d_model", "n_head", "d_ff"))
  else:
    arch = {}
    n_layer, d_model, n_head, d_ff, _ = sizes.lookup(size)
  big = paper_scale(size)
  out = ml_collections.ConfigDict(dict(
      size=size,            # name in configs/sizes.py; the four numbers below come from it
      n_layer=n_layer,
      d_model=d_model,
      n_head=n_head,
      d_ff=d_ff,
      # Rotary positions: relative, so left-padded batches need only position ids from the mask,
      # and no table caps the context (the paper's scheme is unknown, Bai et al. 2022, §3.1).
      rope_theta=10_000.0,
      init_std=0.02,        # GPT-2 style; residual output projections get init_std/sqrt(2·n_layer)
      dtype="bfloat16" if big else "float32",  # compute dtype (activations, matmuls)
      param_dtype="float32",  # master weights and AdamW state stay fp32
      # jax.checkpoint policy for each scanned layer: none | full | dots | dots_no_batch |
      # save_dots_except_mlp (MaxText's: recompute the MLP) | offload (those to host memory).
      remat_policy="full" if big else "none",
      # GELU: exact (erf) for paper sizes, 14% faster on CPU for the 13M PM step; the CPU sizes
      # keep tanh, with which every recorded CPU run was made.
      gelu_approximate=not big,
      # "auto" (the reference on CPU, cuDNN flash attention on GPU, Pallas on TPU), "reference"
      # (einsum), "xla" (jax.nn.dot_product_attention's XLA form), "cudnn", "pallas"
      attention="auto",
      # Full forwards split the queries into blocks of this many tokens that skip the keys the
      # causal mask hides (about half the attention work at long contexts); 0: one block.
      attn_chunk=128,
      scan_unroll=1,           # layers per scan iteration; = n_layer unrolls (faster on CPU)
      # Architecture (hh/models/transformer.py:ModelConfig); the defaults are hh's own model,
      # the public sizes (configs/sizes.py:PUBLIC) set GPT-NeoX's or Llama's.
      vocab_size=0,            # embedding rows; 0: the tokenizer's size (a checkpoint may pad)
      norm="layernorm",        # layernorm | rmsnorm
      norm_eps=1e-6,
      mlp="gelu",              # gelu | swiglu
      n_kv_head=0,             # 0: n_head; a divisor of it: grouped-query attention
      head_dim=0,              # 0: d_model / n_head
      rotary_pct=1.0,          # fraction of each head rotated
      rope_scaling=(),         # () or ("llama3", factor, low_freq_factor, high_freq_factor, len)
      parallel_residual=False,
      attn_bias=False,
      mlp_bias=False,
      tie_embeddings=False,
  ))
  out.update(arch)
  return out


def _directory_model(path: str) -> dict:
  """The architecture keys of a model directory's config.json (hh's ``model`` block, or a
  Hugging Face config read by hh/models/hf.py)."""
  from hh.models import hf
  raw = hf.read_hf_config(path)
  if "model_type" in raw:
    return hf.model_block(raw, os.path.join(path, "config.json"))
  if "model" not in raw:
    raise ValueError(f"size={path}: its config.json is neither hh's nor a Hugging Face one")
  keep = ("size", "dtype", "param_dtype", "remat_policy", "attention", "attn_chunk",
          "scan_unroll", "init_std")
  return {k: v for k, v in raw["model"].items() if k not in keep}


def optim(lr: float, warmup_steps: int, schedule: str) -> ml_collections.ConfigDict:
  """A stage's optimizer: clipped AdamW with warmup then ``schedule``."""
  return ml_collections.ConfigDict(dict(
      lr=lr,                 # peak LR
      warmup_steps=warmup_steps,  # linear warmup from 0
      schedule=schedule,     # cosine | linear | constant after warmup
      end_lr_ratio=0.1,      # final LR as a fraction of the peak (cosine, linear)
      weight_decay=0.1,      # AdamW, on every matrix (not on norm scales or biases)
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      clip_norm=1.0,         # global gradient-norm clipping
  ))


def loop(log_every: int, eval_every: int, ckpt_every: int, eval_at=(),
         steps: int | None = None) -> ml_collections.ConfigDict:
  """A stage's loop settings (hh/train/loop.py:Settings); ``steps`` where the stage has a fixed
  count (the PM phases derive theirs from one epoch of data)."""
  out = ml_collections.ConfigDict(dict(
      log_every=log_every,   # train metrics to JSON lines / TensorBoard
      eval_every=eval_every,  # evaluation
      eval_at=tuple(eval_at),  # extra steps to evaluate at (log-spaced learning curves)
      ckpt_every=ckpt_every,  # async orbax checkpoint
      keep_ckpts=2,
      stop_at=config_dict.placeholder(int),  # stop (checkpointed) here, as a preemption would
  ))
  if steps is not None:
    out.steps = steps
  return out


def base(size: str) -> ml_collections.ConfigDict:
  """Seed, model, tokenizer, mesh, rules and data locations: shared by every stage."""
  config = ml_collections.ConfigDict()
  config.seed = 0           # model init, data order and every other random choice derive from it
  config.model = model_config(size)
  config.tokenizer = ml_collections.ConfigDict(dict(
      path=config_dict.placeholder(str),  # a sentencepiece .model; None: the LM stage trains one
      vocab_size=32_000 if paper_scale(size) else 4096,  # used when training one
  ))
  config.world = world.get_world_config()  # read by datasets named hh_sim/...
  config.data_dirs = ml_collections.ConfigDict(dict(
      # where hh_sim was built (a pipeline workdir); None inside a pipeline: its own workdir
      world=config_dict.placeholder(str),
      # hh-rlhf in the official layout; None: downloaded from its repository (needs a network)
      hh_rlhf=str(DATA_DIR / "hh-rlhf") if DATA_DIR else config_dict.placeholder(str),
      # WikiText-2 raw files (wiki.valid.raw etc. renamed valid.txt, test.txt)
      wikitext=str(DATA_DIR / "wikitext-2") if DATA_DIR else config_dict.placeholder(str),
  ))
  config.progress = True    # tqdm bars (no effect on results)
  # Device mesh: one axis may be -1 (all remaining devices). Batch is split over data×fsdp.
  config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  # Logical axis → mesh axis (MaxText style). Parameters: embed/mlp/heads/kv/vocab/norm/layers;
  # activations: act_*; each layer's KV cache [B, H, S, K]: cache_*. The scan over layers adds
  # the leading 'layers' axis to the parameters.
  config.axis_rules = (
      ("act_batch", ("data", "fsdp")),
      ("act_len", None),
      ("act_kv_len", None),
      ("act_embed", None),
      ("act_heads", "tensor"),
      ("act_mlp", "tensor"),
      ("act_vocab", "tensor"),
      ("act_kv", None),
      ("cache_batch", ("data", "fsdp")),
      ("cache_len", None),
      ("cache_heads", "tensor"),
      ("cache_kv", None),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("vocab", "tensor"),
      ("kv", None),
      ("norm", None),
      ("layers", None),
  )
  # Fail when more than this fraction of parameters is replicated on a mesh of >1 device
  # (norm scales and biases are the only parameters expected to be).
  config.max_replicated_fraction = 0.01
  return config
