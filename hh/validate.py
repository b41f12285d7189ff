"""Config values checked before any stage does work: one line naming the key and what is allowed.

Types are already enforced by the locked ml_collections config (``--config.lm.optim.lr=abc`` is
refused at parsing); this adds ranges, by key name wherever the key appears, and the relations
between keys: batches that split over the mesh's batch axes, PPO's minibatches, a response cap
that fits the PM's context.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import jax

from hh import io

_POS = (lambda v: v > 0, "> 0")
_NONNEG = (lambda v: v >= 0, "≥ 0")
_ONE_UP = (lambda v: v >= 1, "≥ 1")
_UNIT = (lambda v: 0 <= v <= 1, "in [0, 1]")
_BETA = (lambda v: 0 <= v < 1, "in [0, 1)")

# key name → (check, what is allowed); applies wherever the key appears in the config tree.
RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "lr": _NONNEG, "warmup_steps": _NONNEG, "weight_decay": _NONNEG, "clip_norm": _POS,
    "end_lr_ratio": _UNIT, "b1": _BETA, "b2": _BETA, "eps": _POS,
    "batch_size": _ONE_UP, "batch_pairs": _ONE_UP, "rollout_batch": _ONE_UP,
    "minibatches": _ONE_UP, "epochs": _ONE_UP, "steps": _ONE_UP, "seq_len": (lambda v: v >= 2,
                                                                               "≥ 2"),
    "max_new_tokens": _ONE_UP, "samples": _ONE_UP, "max_prompts": _ONE_UP,
    "eval_batches": _ONE_UP, "log_every": _ONE_UP, "eval_every": _ONE_UP, "ckpt_every": _ONE_UP,
    "kl_coef": _NONNEG, "clip_eps": _POS, "vf_clip": _POS, "vf_coef": _NONNEG,
    "eot_penalty": _NONNEG, "gamma": _UNIT, "lam": _UNIT, "harmful_fraction": _UNIT,
    "temperature": _NONNEG, "top_p": (lambda v: 0 < v <= 1, "in (0, 1]"), "top_k": _NONNEG,
    "cache_block": _NONNEG, "vocab_size": (lambda v: v >= 16, "≥ 16"), "init_std": _POS,
    "kl_target": _POS, "kl_horizon": _POS,
}
# full paths whose rule differs from their key's (PPO takes log-probs at its temperature), or
# that only one block has
PATH_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "config.ppo.temperature": _POS,
    "config.model.vocab_size": (lambda v: v == 0 or v >= 16, "0 (the tokenizer's) or ≥ 16"),
    "config.model.n_kv_head": _NONNEG, "config.model.head_dim": _NONNEG,
    "config.model.norm_eps": _POS,
}


def _leaves(tree: Any, prefix: str = "config") -> Iterator[tuple[str, Any]]:
  if hasattr(tree, "items"):
    for k, v in tree.items():
      yield from _leaves(v, f"{prefix}.{k}")
  else:
    yield prefix, tree


def _batch_axes(config) -> int:
  """data × fsdp of the config's mesh on this machine's devices."""
  from hh import sharding
  shape = sharding.mesh_shape(config.mesh, jax.device_count())  # or names why the mesh fails
  return shape[sharding.MESH_AXES.index("data")] * shape[sharding.MESH_AXES.index("fsdp")]


def check(config):
  """Raises ValueError for the first value out of range or relation that does not hold."""
  if "model" in config:
    for block in ("lm", "pm", "cd", "ppo"):
      init = config.get(block, {}).get("init_from") if block in config else None
      if isinstance(init, str) and init:
        _same_model(config, init, f"config.{block}.init_from")
  for path, value in _leaves(config):
    rule = PATH_RULES.get(path) or RULES.get(path.rsplit(".", 1)[-1])
    if rule is None or value is None or isinstance(value, (str, bool, tuple, list)):
      continue
    ok, allowed = rule
    if not (isinstance(value, (int, float)) and math.isfinite(value) and ok(value)):
      raise ValueError(f"{path}={value}: allowed {allowed}")
  n = _batch_axes(config) if "mesh" in config else None
  if n:
    for path, value in _leaves(config):
      key = path.rsplit(".", 1)[-1]
      if key in ("batch_size", "batch_pairs", "rollout_batch") and value and value % n:
        if path == "config.sampling.batch_size":
          continue  # the sampler pads its last batch itself
        raise ValueError(f"{path}={value} does not split over the mesh's batch axes "
                         f"(data × fsdp = {n} on {jax.device_count()} devices); allowed: a "
                         f"multiple of {n}")
  if "ppo" in config:
    cfg = config.ppo
    if cfg.rollout_batch % cfg.minibatches:
      raise ValueError(f"config.ppo.minibatches={cfg.minibatches} does not divide "
                       f"config.ppo.rollout_batch={cfg.rollout_batch}; allowed: a divisor")
    size = cfg.rollout_batch // cfg.minibatches
    if n and size % n:
      raise ValueError(f"config.ppo.minibatches={cfg.minibatches}: minibatches of {size} rows do "
                       f"not split over the mesh's batch axes (data × fsdp = {n}); allowed: "
                       f"rollout_batch / minibatches a multiple of {n}")
    if "sampling" in config and cfg.rollout_batch % min(config.sampling.batch_size,
                                                         cfg.rollout_batch):
      raise ValueError(f"config.sampling.batch_size={config.sampling.batch_size} does not divide "
                       f"config.ppo.rollout_batch={cfg.rollout_batch} (the rollout is sampled in "
                       "calls of that many rows); allowed: a divisor, or ≥ the rollout")
    if "pm" in config and "finetune" in config.pm:
      context = config.pm.finetune.seq_len
      if cfg.max_new_tokens >= context:
        raise ValueError(f"config.ppo.max_new_tokens={cfg.max_new_tokens} is not shorter than the "
                         f"PM's context config.pm.finetune.seq_len={context}; allowed: < {context}")


# The model keys a checkpoint's params are laid out and computed by: a checkpoint of another
# architecture can have the same shapes (parallel residual, the norm's eps, rotary), so all are
# compared, each with ModelConfig's default where an older config lacks it.
ARCH_KEYS = ("n_layer", "d_model", "n_head", "d_ff", "norm", "norm_eps", "mlp", "n_kv_head",
             "head_dim", "rotary_pct", "rope_theta", "rope_scaling", "parallel_residual",
             "attn_bias", "mlp_bias", "tie_embeddings")


def _same_model(config, workdir: str, key: str):
  """A workdir (or Hugging Face directory) whose model differs from ``config.model`` in its
  architecture → one line naming ``key`` and the keys that differ (a workdir without
  ``config.json`` is left to the stage, which names what is missing)."""
  import dataclasses
  import os

  from hh.models import ModelConfig, hf
  path = os.path.join(workdir, "config.json")
  if not io.exists(path):
    return
  raw = io.read_json(path)
  theirs = hf.model_block(raw, path) if "model_type" in raw else raw.get("model", {})
  defaults = {f.name: f.default for f in dataclasses.fields(ModelConfig)}
  norm = lambda v: list(v) if isinstance(v, (tuple, list)) else v  # noqa: E731
  differ = [k for k in ARCH_KEYS if norm(config.model.get(k, defaults.get(k)))
            != norm(theirs.get(k, defaults.get(k)))]
  if differ:
    shown = ", ".join(f"{k}={theirs.get(k, defaults.get(k))!r} there, "
                      f"{config.model.get(k, defaults.get(k))!r} here" for k in differ[:3])
    raise ValueError(f"{key}={workdir!r} is another model ({shown}); allowed: a model of the "
                     "config's size (size=... names a size or a model directory)")
