"""Multi-process start-up: ``jax.distributed.initialize`` where a cluster launched the job.

``config.distributed`` (configs/common.py):

* ``auto`` (default): with ``HH_COORDINATOR=host:port``, ``HH_NUM_PROCESSES`` and
  ``HH_PROCESS_ID`` set, those; else, under SLURM with more than one task, Open MPI with more
  than one rank, or on a Cloud TPU VM, ``jax.distributed.initialize()`` with no arguments (JAX
  reads the coordinator, the process count and index from the cluster); else one process.
* ``single``: one process whatever the environment says.

Other clusters (Kubernetes without a TPU, a hand-started set of hosts) set the three ``HH_``
variables. On CPU the gloo collectives are selected. The process count and index are logged.
"""
from __future__ import annotations

import glob
import importlib.util
import os

import jax
from absl import logging

MODES = ("auto", "single")
_SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID",
          "SLURM_LOCALID")
_initialized = False


def detect(env=None) -> str | None:
  """The launcher this process runs under: ``explicit``, ``slurm``, ``ompi``, ``tpu`` or None."""
  env = os.environ if env is None else env
  if "HH_COORDINATOR" in env:
    return "explicit"
  if all(k in env for k in _SLURM) and int(env["SLURM_NTASKS"]) > 1:
    return "slurm"
  if "OMPI_MCA_orte_hnp_uri" in env and int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
    return "ompi"
  if importlib.util.find_spec("libtpu") is not None and glob.glob("/dev/accel*") + glob.glob(
      "/dev/vfio/[0-9]*"):
    return "tpu"
  return None


def maybe_initialize(mode: str | None = "auto") -> None:
  global _initialized
  mode = mode or "auto"
  if mode not in MODES:
    raise ValueError(f"config.distributed={mode!r}; allowed: {', '.join(MODES)}")
  if _initialized or mode == "single":
    return
  kind = detect()
  if kind is None:
    return
  if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if kind == "explicit":
    jax.distributed.initialize(coordinator_address=os.environ["HH_COORDINATOR"],
                               num_processes=int(os.environ["HH_NUM_PROCESSES"]),
                               process_id=int(os.environ["HH_PROCESS_ID"]))
  else:
    jax.distributed.initialize()
  _initialized = True
  logging.warning("distributed (%s): process %d of %d, %d local devices", kind,
                  jax.process_index(), jax.process_count(), jax.local_device_count())
