"""Mesh from config, logical-axis rules, shard-by-shape helpers and the replication guard.

The model names every parameter and main activation with logical axes; ``config.axis_rules`` maps
them to the mesh axes ``('data', 'fsdp', 'tensor')``. Batches are split over ``data × fsdp``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")


def mesh_shape(mesh_cfg, num_devices: int) -> tuple[int, ...]:
  """Resolves ``config.mesh`` (one axis may be -1) against the device count, or says why not."""
  sizes = [int(mesh_cfg[a]) for a in MESH_AXES]
  described = " × ".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes))
  if sum(s == -1 for s in sizes) > 1 or any(s == 0 or s < -1 for s in sizes):
    raise ValueError(f"config.mesh ({described}): each axis must be ≥1, and at most one may be -1")
  known = math.prod(s for s in sizes if s != -1)
  if num_devices % known:
    raise ValueError(f"config.mesh ({described}) does not divide the {num_devices} devices: "
                     f"the product of the fixed axes must divide {num_devices}")
  sizes = [num_devices // known if s == -1 else s for s in sizes]
  if math.prod(sizes) != num_devices:
    raise ValueError(f"config.mesh ({described}) covers {math.prod(sizes)} devices, but "
                     f"{num_devices} are present; set one axis to -1 or make the product "
                     f"{num_devices}")
  return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ``Mesh`` over all (or the given) devices with auto-sharded axes ``MESH_AXES``."""
  devices = list(devices if devices is not None else jax.devices())
  shape = mesh_shape(mesh_cfg, len(devices))
  auto = (jax.sharding.AxisType.Auto,) * len(MESH_AXES)
  if devices == list(jax.devices()):
    return jax.make_mesh(shape, MESH_AXES, axis_types=auto)
  return Mesh(np.asarray(devices).reshape(shape), MESH_AXES, axis_types=auto)


def rules(config) -> tuple[tuple[str, Any], ...]:
  """``config.axis_rules`` as the tuple Flax expects (lists from overrides become tuples)."""
  return tuple((name, tuple(ax) if isinstance(ax, list) else ax)
               for name, ax in config.axis_rules)


# The sampler's layout: weight-stationary tensor parallelism over every non-data device.
DECODE_OVERRIDES = {"embed": None, "act_batch": "data", "cache_batch": "data",
                    **{name: ("fsdp", "tensor") for name in (
                        "mlp", "heads", "vocab", "act_mlp", "act_heads", "act_vocab",
                        "cache_heads")}}


def decode_rules(axis_rules) -> tuple[tuple[str, Any], ...]:
  """The rules the sampler runs under, from the training rules: weights split on their output
  (heads, MLP, vocabulary) dimension over ``fsdp × tensor`` and whole along ``embed``; rows over
  ``data`` only; the KV cache split by heads.

  Why: a decode step reads every weight for a handful of tokens. Under the training (FSDP)
  layout each weight is split along ``embed``, so XLA all-gathers the layers' weights — once,
  hoisted out of the decode loop — and holds the whole model unsharded: at 52B on 64 devices
  the sampler's temporaries were 388 GiB per device (``hh.plan``). Split on output dimensions a
  step needs no weight gather, only small activation collectives; the one-off reshard is done
  by ``decode_params``' per-layer copies."""
  return tuple((name, DECODE_OVERRIDES.get(name, axes)) for name, axes in axis_rules)


def logical_shardings(abstract_boxed: Any, mesh: Mesh, axis_rules) -> Any:
  """NamedShardings for a pytree whose leaves may be ``nn.LogicallyPartitioned`` boxes.

  Unboxed leaves (step counters, RNG) are replicated. The result has the unboxed tree's shape.
  """
  specs = nn.get_partition_spec(abstract_boxed)
  return nn.logical_to_mesh_sharding(specs, mesh, axis_rules)


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
  """Batch-major arrays [B, ...]: B split over data × fsdp, the rest replicated."""
  return NamedSharding(mesh, P(BATCH_AXES, *([None] * (ndim - 1))))


def padded_batch_size(batch_size: int, mesh: Mesh) -> int:
  """``batch_size`` rounded up to a multiple of the batch shards (data × fsdp): what host-side
  scoring and sampling pad each call's rows to, so any batch size runs on any mesh."""
  shards = math.prod(mesh.shape[a] for a in BATCH_AXES)
  return -(-batch_size // shards) * shards


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Each process's rows → one global jax.Array per key, sharded on the batch axes.

  ``local`` holds this process's contiguous ``1/process_count`` of the global batch rows.
  """
  return {k: jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v)
          for k, v in local.items()}


def process_rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """This process's contiguous ``1/process_count`` of a global batch's rows."""
  n, p = jax.process_count(), jax.process_index()
  for k, v in batch.items():
    if len(v) % n:
      raise ValueError(f"a batch of {len(v)} rows ({k!r}) does not split over {n} processes")
  return {k: np.split(v, n)[p] for k, v in batch.items()}


def whole_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """The same whole batch, held by every process (host-side scoring and sampling) → global
  arrays: each process contributes its own rows."""
  return global_batch(process_rows(batch), mesh)


def to_host(x: jax.Array) -> np.ndarray:
  """A global array's whole value in every process (an all-gather across processes when its
  shards live in several)."""
  if x.is_fully_addressable or x.is_fully_replicated:
    return np.asarray(jax.device_get(x))
  from jax.experimental import multihost_utils
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def replicated_fraction(abstract: Any, shardings: Any) -> tuple[float, list[str]]:
  """Fraction of elements (over all leaves) that every device holds in full, and their names."""
  total, repl, names = 0, 0, []
  flat, _ = jax.tree_util.tree_flatten_with_path(abstract)
  flat_sh = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  for (path, leaf), sharding in zip(flat, flat_sh):
    size = math.prod(leaf.shape)
    total += size
    if sharding.is_fully_replicated:
      repl += size
      names.append(jax.tree_util.keystr(path))
  return repl / max(total, 1), names


def check_replication(abstract_params: Any, shardings: Any, mesh: Mesh, max_fraction: float):
  """Raises when a sharded run leaves more than ``max_fraction`` of the parameters replicated.

  Catches rule tables that silently miss a logical name (MaxText's guard). Skipped on one device.
  """
  if mesh.size == 1:
    return
  frac, names = replicated_fraction(abstract_params, shardings)
  if frac > max_fraction:
    raise ValueError(
        f"{frac:.1%} of parameters are replicated on mesh {dict(mesh.shape)} (allowed "
        f"{max_fraction:.1%}, config.max_replicated_fraction); check config.axis_rules for: "
        f"{', '.join(names[:8])}")


def check_divisible(abstract: Any, shardings: Any, what: str = "parameter"):
  """Raises, naming the leaf and the mesh axes, when a sharded dimension does not divide evenly."""
  flat, _ = jax.tree_util.tree_flatten_with_path(abstract)
  flat_sh = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  for (path, leaf), sh in zip(flat, flat_sh):
    for dim, axes in zip(leaf.shape, tuple(sh.spec) + (None,) * len(leaf.shape)):
      axes = (axes,) if isinstance(axes, str) else (axes or ())
      parts = math.prod(sh.mesh.shape[a] for a in axes)
      if dim % parts:
        raise ValueError(
            f"{what} {jax.tree_util.keystr(path)} of shape {leaf.shape}: a dimension of {dim} "
            f"cannot be split {parts} ways over mesh axes {axes}; change config.mesh or the "
            "model size (e.g. n_head must be divisible by mesh.tensor)")


def per_device_bytes(abstract: Any, shardings: Any) -> int:
  """Bytes one device holds for a pytree of ShapeDtypeStructs under the given shardings."""
  total = 0
  flat_sh = jax.tree_util.tree_leaves(shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
  for leaf, sharding in zip(jax.tree_util.tree_leaves(abstract), flat_sh):
    total += math.prod(sharding.shard_shape(leaf.shape)) * np.dtype(leaf.dtype).itemsize
  return total
