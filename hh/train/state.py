"""Train state, optimizer from config, and sharded initialisation by shape (big_vision style).

``eval_shape(init)`` gives abstract leaves still boxed with logical axis names → shardings from
the config's rules → ``jax.jit(init, out_shardings=...)`` materialises each shard on its device.
Nothing is ever gathered onto one device or host.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from hh import sharding


@flax.struct.dataclass
class TrainState:
  """Everything a stage needs to resume bit for bit (the data position is checkpointed beside)."""
  step: jax.Array        # int32 scalar, number of updates applied
  params: Any
  opt_state: Any
  rng: jax.Array         # uint32[2] raw key data (checkpointable), folded with the step


def lr_schedule(optim_cfg, total_steps: int) -> optax.Schedule:
  """Linear warmup to ``lr`` then cosine/linear decay to ``end_lr_ratio·lr`` (or constant)."""
  peak, warm = optim_cfg.lr, optim_cfg.warmup_steps
  end = peak * optim_cfg.end_lr_ratio
  decay_steps = max(total_steps - warm, 1)
  if optim_cfg.schedule == "cosine":
    after = optax.cosine_decay_schedule(peak, decay_steps, alpha=optim_cfg.end_lr_ratio)
  elif optim_cfg.schedule == "linear":
    after = optax.linear_schedule(peak, end, decay_steps)
  elif optim_cfg.schedule == "constant":
    after = optax.constant_schedule(peak)
  else:
    raise ValueError(f"optim.schedule={optim_cfg.schedule!r}; allowed: cosine, linear, "
                     "constant")
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warm), after], [warm])


NO_DECAY = ("scale", "bias")  # LayerNorm scales and biases, the scalar head's bias


def _decay_mask(params):
  """Weight decay on every matrix (attention query/key/value/out, MLP wi/wo, embedding, heads),
  not on norm scales or biases.

  Decided by leaf name, since scanned layers give LayerNorm scales a 2-D [L, D] shape.
  """
  def decays(path, _):
    name = [k.key for k in path if isinstance(k, jax.tree_util.DictKey)][-1]
    return name not in NO_DECAY
  return jax.tree_util.tree_map_with_path(decays, params)


def make_optimizer(optim_cfg, total_steps: int) -> optax.GradientTransformation:
  """Global-norm clipping then AdamW with the schedule above."""
  return optax.chain(
      optax.clip_by_global_norm(optim_cfg.clip_norm),
      optax.adamw(lr_schedule(optim_cfg, total_steps), b1=optim_cfg.b1, b2=optim_cfg.b2,
                  eps=optim_cfg.eps, weight_decay=optim_cfg.weight_decay, mask=_decay_mask),
  )


def init_fn(model: nn.Module, tx: optax.GradientTransformation, example: tuple,
            seed: int) -> Callable[[], TrainState]:
  """A function of no arguments that builds the (still boxed) initial state."""
  def init() -> TrainState:
    rng = jax.random.PRNGKey(seed)
    init_rng, state_rng = jax.random.split(rng)
    params = model.init(init_rng, *example)["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                      rng=state_rng)
  return init


def abstract_state(init: Callable[[], TrainState], mesh: Mesh, axis_rules):
  """(abstract unboxed state, its NamedShardings) — nothing allocated."""
  boxed = jax.eval_shape(init)
  return nn.unbox(boxed), sharding.logical_shardings(boxed, mesh, axis_rules)


def create_state(init: Callable[[], TrainState], shardings) -> TrainState:
  """Materialises the state directly in its shards."""
  return jax.jit(lambda: nn.unbox(init()), out_shardings=shardings)()
