"""Metrics: steps return sums plus counts; one writer on process 0 (JSON lines + TensorBoard).

Every metric a stage writes is documented in README.md ("Metrics"). ``reduce`` turns
``{name_sum, name_count}`` pairs into means so masked token averages stay exact across
microbatches, log intervals and hosts.
"""
from __future__ import annotations

import json
import os
import time
from typing import Any

import jax
import numpy as np

from hh import io


def reduce(sums: dict[str, Any]) -> dict[str, float]:
  """``{'loss_sum': s, 'loss_count': n, 'x': v}`` → ``{'loss': s/n, 'x': v}`` (host floats)."""
  host = {k: float(np.asarray(v)) for k, v in jax.device_get(sums).items()}
  out = {}
  for key, value in host.items():
    if key.endswith("_count"):
      continue
    if key.endswith("_sum"):
      base = key[: -len("_sum")]
      out[base] = value / max(host.get(base + "_count", 1.0), 1e-12)
    else:
      out[key] = value
  return out


def accumulate(total: dict | None, new: dict) -> dict:
  """Adds step metrics on device (no host sync); ``None`` starts a new interval."""
  return new if total is None else jax.tree.map(lambda a, b: a + b, total, new)


class Writer:
  """Appends ``{"step", "split", ...}`` lines to ``metrics.jsonl`` and TensorBoard scalars."""

  def __init__(self, workdir: str):
    self.active = jax.process_index() == 0
    self._tb = None
    if self.active:
      io.makedirs(workdir)
      self._path = os.path.join(workdir, "metrics.jsonl")
      from tensorboardX import SummaryWriter  # imported here: only process 0 writes
      _tensorboard_through_io()
      self._tb = SummaryWriter(os.path.join(workdir, "tb"))

  def write(self, step: int, split: str, metrics: dict[str, float]):
    if not self.active:
      return
    io.append_text(self._path, json.dumps({"step": int(step), "split": split, "time": time.time(),
                                           **{k: float(v) for k, v in metrics.items()}}) + "\n")
    for k, v in metrics.items():
      self._tb.add_scalar(f"{split}/{k}", float(v), int(step))
    self._tb.flush()

  def truncate_after(self, step: int):
    """Drops lines past ``step`` (written after the checkpoint a resumed run restarts from)."""
    if not self.active or not io.exists(self._path):
      return
    rows = read(os.path.dirname(self._path))
    io.write_text(self._path, "".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))

  def close(self):
    if self._tb is not None:
      self._tb.close()


class _EventFile:
  """A TensorBoard event file on object storage, through hh's path layer: the records kept in
  memory and the whole object rewritten at each flush (an object cannot be appended to)."""

  def __init__(self, path: str):
    self._path, self._data = path, bytearray()

  def write(self, data: bytes):
    self._data += data

  def flush(self):
    io.write_bytes(self._path, bytes(self._data))

  def close(self):
    self.flush()


class _EventFiles:
  def open(self, path: str) -> _EventFile:
    return _EventFile(path)

  def directory_check(self, path: str):
    io.check(path)  # folders on object storage are prefixes


def _tensorboard_through_io():
  """TensorBoard's writer on a gs:// (s3://, az://) workdir goes through hh's path layer, as
  everything else does, instead of its own cloud clients."""
  from tensorboardX import record_writer
  for scheme in io.SCHEMES:
    record_writer.register_writer_factory(scheme, _EventFiles())


def read(workdir: str, split: str | None = None) -> list[dict]:
  """The metric lines of a workdir (for reports and experiments)."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not io.exists(path):
    return []
  with io.open(path) as f:
    lines = f.read().split("\n")
  rows = []
  for n, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError:
      if n == len(lines):  # an unterminated last line: a kill landed mid-append; resume drops it
        break
      raise ValueError(f"{path}:{n}: not a JSON line") from None
  return [r for r in rows if split is None or r["split"] == split]
