"""Graceful preemption: a SIGTERM (the notice TPU VMs, spot GPUs and SLURM give before they take
a machine) makes the running stage save a checkpoint at its next step boundary and the job exit
with ``EXIT_CODE``; rerunning the same command resumes from that checkpoint.

One process: the SIGTERM handler sets a flag that ``loop.fit`` reads after every step. Several
processes: every process must stop at the same step, so ``requested(step)`` asks JAX's preemption
sync point (its distributed service hears the SIGTERM and agrees on a step for all processes).
"""
from __future__ import annotations

import signal
import threading

import jax

EXIT_CODE = 75  # EX_TEMPFAIL: a temporary failure, run the same command again
_flag = threading.Event()


class Preempted(Exception):
  """Raised once a preempted stage's checkpoint is written (``step``: its step, or None between
  stages)."""

  def __init__(self, where: str, step: int | None = None):
    self.where, self.step = where, step
    at = f" at step {step}" if step is not None else ""
    super().__init__(f"preempted{at} ({where}): checkpoint saved; run the same command again to "
                     "resume")


def _handler(signum, frame):
  del signum, frame
  _flag.set()


def install():
  """Routes SIGTERM to the flag (from the main thread; elsewhere a no-op)."""
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, _handler)


def requested(step: int | None = None) -> bool:
  """Whether to stop now: the SIGTERM flag (one process), or JAX's preemption sync point at
  ``step`` (several processes, all of which reach the same answer at the same step)."""
  if jax.process_count() > 1:
    if step is None:
      return False
    from jax.experimental import multihost_utils
    try:
      return bool(multihost_utils.reached_preemption_sync_point(step))
    except (RuntimeError, ValueError):  # no preemption service in this runtime
      return False
  return _flag.is_set()


def reset():
  _flag.clear()
