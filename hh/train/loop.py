"""The training loop every stage shares: steps, periodic eval, async checkpoints, metrics.

The loop holds no model logic: it calls a jitted ``train_step(state, batch) -> (state, metrics)``
and an ``evaluate(state) -> metrics`` given by the stage. Metrics are accumulated on device as
sums plus counts and pulled to the host once per ``log_every`` steps.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import jax
import tqdm

from hh.train import checkpoint
from hh.train import metrics as metrics_lib


def fit(*, state: Any, train_step: Callable, next_batch: Callable[[], Any],
        data_state: Callable[[], dict], evaluate: Callable[[Any], dict], train_cfg,
        mngr, writer: metrics_lib.Writer, tokens_per_step: int,
        lr_fn: Callable[[int], float] | None = None) -> Any:
  """Runs from ``state.step`` to ``train_cfg.steps`` (or ``train_cfg.stop_at``); returns the state.

  Raises FloatingPointError naming the step when the loss stops being finite.
  """
  step = int(jax.device_get(state.step))
  last = train_cfg.steps if train_cfg.stop_at is None else min(train_cfg.stop_at, train_cfg.steps)
  bar = tqdm.tqdm(total=train_cfg.steps, initial=step, unit="step", dynamic_ncols=True,
                  disable=not train_cfg.progress or jax.process_index() != 0)
  acc, t_start, steps_in_interval = None, time.perf_counter(), 0
  while step < last:
    state, step_metrics = train_step(state, next_batch())
    step += 1
    steps_in_interval += 1
    acc = metrics_lib.accumulate(acc, step_metrics)
    bar.update(1)
    if step % train_cfg.log_every == 0 or step == last:
      logged = metrics_lib.reduce(acc)  # the one host sync per interval
      elapsed = time.perf_counter() - t_start
      logged["steps_per_sec"] = steps_in_interval / elapsed
      logged["tokens_per_sec"] = steps_in_interval * tokens_per_step / elapsed
      if lr_fn is not None:
        logged["lr"] = float(lr_fn(step))
      if not math.isfinite(logged["loss"]):
        raise FloatingPointError(f"non-finite train loss {logged['loss']} at step {step}")
      writer.write(step, "train", logged)
      bar.set_postfix(loss=f"{logged['loss']:.3f}", tok_s=f"{logged['tokens_per_sec']:.0f}")
      acc, t_start, steps_in_interval = None, time.perf_counter(), 0
    if step % train_cfg.eval_every == 0 or step == train_cfg.steps or step in train_cfg.eval_at:
      writer.write(step, "val", evaluate(state))
    if step % train_cfg.ckpt_every == 0 or step == last:
      checkpoint.save(mngr, step, state, data_state(), force=True)
  bar.close()
  mngr.wait_until_finished()
  return state
