"""The training loop every stage shares: steps, periodic eval, async checkpoints, metrics.

The loop holds no model logic: it calls a jitted ``train_step(state, batch) -> (state,
metrics)`` on ``batches(state)`` — the batch source sees the current state, so an RL stage can
roll out the current policy there — and an ``evaluate(state) -> metrics`` given by the stage.
Metrics are accumulated on device as sums plus counts and pulled to the host once per
``log_every`` steps.
"""
from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import jax
import tqdm

from hh import preemption
from hh.train import checkpoint
from hh.train import metrics as metrics_lib


@dataclasses.dataclass(frozen=True)
class Settings:
  """How long and how often: resolved once per stage (e.g. steps from an epoch of data)."""
  steps: int
  log_every: int
  eval_every: int
  ckpt_every: int
  eval_at: tuple[int, ...] = ()
  stop_at: int | None = None  # stop (checkpointed) here, as a preemption would
  progress: bool = True

  @classmethod
  def from_config(cls, loop_cfg, **resolved) -> "Settings":
    """``config.<stage>.loop`` plus values the stage resolves (``steps=...`` from its data)."""
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: loop_cfg[k] for k in fields if k in loop_cfg} | resolved
    values["eval_at"] = tuple(values.get("eval_at", ()))
    for key in ("steps", "log_every", "eval_every", "ckpt_every"):
      if int(values[key]) < 1:
        raise ValueError(f"loop.{key}={values[key]}; expected ≥ 1")
    return cls(**values)

  @property
  def last(self) -> int:
    return self.steps if self.stop_at is None else min(self.stop_at, self.steps)


def fit(*, state: Any, train_step: Callable, batches: Callable[[Any], Any],
        data_state: Callable[[], dict], evaluate: Callable[[Any], dict], settings: Settings,
        mngr, writer: metrics_lib.Writer, tokens_per_step: int,
        lr_fn: Callable[[int], float] | None = None) -> Any:
  """Runs from ``state.step`` to ``settings.steps`` (or ``settings.stop_at``); returns the state.

  Raises FloatingPointError naming the step and the quantities when any train metric (loss,
  gradient norm, a stage's reward or KL) stops being finite, before that state is checkpointed;
  raises ``preemption.Preempted`` after checkpointing the step at which a preemption arrived.
  """
  step = int(jax.device_get(state.step))
  last = settings.last
  bar = tqdm.tqdm(total=settings.steps, initial=step, unit="step", dynamic_ncols=True,
                  disable=not settings.progress or jax.process_index() != 0)
  acc, t_start, steps_in_interval = None, time.perf_counter(), 0
  while step < last:
    state, step_metrics = train_step(state, batches(state))
    step += 1
    steps_in_interval += 1
    acc = metrics_lib.accumulate(acc, step_metrics)
    bar.update(1)
    if step % settings.log_every == 0 or step == last:
      logged = _interval(acc, steps_in_interval, tokens_per_step, t_start)  # one host sync
      if lr_fn is not None:
        logged["lr"] = float(lr_fn(step))
      _check_finite(logged, step, mngr)
      writer.write(step, "train", logged)
      bar.set_postfix(loss=f"{logged['loss']:.3f}", tok_s=f"{logged['tokens_per_sec']:.0f}")
      acc, t_start, steps_in_interval = None, time.perf_counter(), 0
    if step % settings.eval_every == 0 or step == settings.steps or step in settings.eval_at:
      writer.write(step, "val", evaluate(state))
    stop = step < last and preemption.requested(step)
    if step % settings.ckpt_every == 0 or step == last or stop:
      if acc is not None:  # never checkpoint a state whose interval went non-finite
        _check_finite(metrics_lib.reduce(acc), step, mngr)
      checkpoint.save(mngr, step, state, data_state(), force=True)
    if stop:  # the interval so far is logged as it stands; the rerun starts the next one here
      if acc is not None:
        writer.write(step, "train", _interval(acc, steps_in_interval, tokens_per_step, t_start))
      bar.close()
      mngr.wait_until_finished()
      raise preemption.Preempted(f"{settings.steps}-step loop", step)
  bar.close()
  mngr.wait_until_finished()
  return state


def _interval(acc, steps: int, tokens_per_step: int, t_start: float) -> dict:
  """A log interval's means (from the accumulated sums + counts) and its throughput."""
  logged = metrics_lib.reduce(acc)
  elapsed = time.perf_counter() - t_start
  logged["steps_per_sec"] = steps / elapsed
  logged["tokens_per_sec"] = steps * tokens_per_step / elapsed
  return logged


def _check_finite(logged: dict, step: int, mngr):
  """Stops the run, naming the non-finite metrics, the step and the checkpoint that is kept."""
  bad = [k for k, v in logged.items() if isinstance(v, float) and not math.isfinite(v)]
  if bad:
    mngr.wait_until_finished()
    kept = mngr.latest_step()
    raise FloatingPointError(
        f"non-finite {', '.join(f'{k}={logged[k]}' for k in bad)} by step {step}; the run "
        f"stopped there, the last good checkpoint (step {kept}) is kept" if kept is not None else
        f"non-finite {', '.join(f'{k}={logged[k]}' for k in bad)} by step {step}; the run "
        "stopped there (no checkpoint yet)")
