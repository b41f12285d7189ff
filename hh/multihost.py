"""Multi-process start-up: ``jax.distributed.initialize`` when the environment asks for it.

On a pod the coordinator is found automatically (TPU, SLURM). For local tests and clusters
without auto-detection set ``HH_COORDINATOR=host:port``, ``HH_NUM_PROCESSES`` and
``HH_PROCESS_ID``; on CPU the gloo collectives are selected.
"""
from __future__ import annotations

import os

import jax

_initialized = False


def maybe_initialize() -> None:
  global _initialized
  if _initialized or "HH_COORDINATOR" not in os.environ:
    return
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.distributed.initialize(coordinator_address=os.environ["HH_COORDINATOR"],
                             num_processes=int(os.environ["HH_NUM_PROCESSES"]),
                             process_id=int(os.environ["HH_PROCESS_ID"]))
  _initialized = True
