"""Files that are either whole or absent: written to a temporary name, then renamed (a crash
never leaves half a file that a later stage would read); JSON lines read with ``file:line``
errors; the workdir lock that keeps a second process out of a running job's workdir."""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import socket
import time

import numpy as np


def write_bytes(path: str, data: bytes):
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, path)


def write_text(path: str, text: str):
  write_bytes(path, text.encode("utf-8"))


def write_json(path: str, obj, indent: int = 1):
  """Keys in the object's own order (e.g. best-of-N's N = 1, 4, 16)."""
  write_text(path, json.dumps(obj, indent=indent) + "\n")


def write_figure(path: str, fig, dpi: int = 110):
  """A matplotlib figure as PNG, whole or absent."""
  buf = io.BytesIO()
  fig.savefig(buf, dpi=dpi, format="png")
  write_bytes(path, buf.getvalue())


def write_npz(path: str, **arrays: np.ndarray):
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes(path, buf.getvalue())


def read_npz(path: str) -> dict[str, np.ndarray]:
  """Arrays only: object arrays (pickles) are refused."""
  with np.load(path, allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def read_jsonl(path: str, required: dict[str, type]) -> list[dict]:
  """The JSON objects of a JSON-lines file, each with ``required`` keys of the given types; a
  missing or empty file, bad UTF-8 or JSON, or a row without a key is a ValueError naming
  ``path:line``. Blank lines are skipped; a UTF-8 BOM and CRLF line ends are accepted."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"{path}: no such file")
  with open(path, "rb") as f:
    raw = f.read()
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    raise ValueError(f"{path}:{line}: not UTF-8 text") from None
  rows = []
  for n, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{path}:{n}: not a JSON object ({e.msg})") from None
    if not isinstance(row, dict):
      raise ValueError(f"{path}:{n}: expected a JSON object, got {type(row).__name__}")
    for key, kind in required.items():
      if not isinstance(row.get(key), kind):
        raise ValueError(f"{path}:{n}: expected key {key!r} of type {kind.__name__}")
    rows.append(row)
  if not rows:
    raise ValueError(f"{path}: no rows (an empty file)")
  return rows


_HELD: dict[str, list] = {}  # lock path → [open file, depth]: re-entrant within a process


@contextlib.contextmanager
def workdir_lock(workdir: str):
  """Holds an exclusive lock on ``workdir`` (``.hh.lock``, ``flock``): a second process that
  tries the same workdir gets a ValueError naming the holder. The kernel drops the lock when the
  holder exits, killed or not, so a SIGKILL leaves no stale lock; nested use in one process is
  allowed (a pipeline running its stages)."""
  path = os.path.join(os.path.abspath(workdir), ".hh.lock")
  if path in _HELD:
    _HELD[path][1] += 1
    try:
      yield
    finally:
      _HELD[path][1] -= 1
    return
  os.makedirs(os.path.dirname(path), exist_ok=True)
  f = open(path, "a+")
  try:
    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    f.seek(0)
    holder = f.read().strip() or "unknown process"
    f.close()
    raise ValueError(f"{workdir}: in use by another hh process ({holder}); wait for it to "
                     "finish or use another workdir") from None
  f.seek(0)
  f.truncate()
  f.write(f"pid {os.getpid()} on {socket.gethostname()} since "
          f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
  f.flush()
  _HELD[path] = [f, 1]
  try:
    yield
  finally:
    del _HELD[path]
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()


_BOOKKEEPING = ("config.json", ".hh.lock")


def remove_if_only_bookkeeping(workdir: str):
  """Removes ``workdir`` when it holds nothing but what a run writes before its work starts
  (``config.json``, ``*.identity.json``, the lock, empty folders): a run that failed on bad input
  leaves no trace in a workdir it created, and a folder with any real output is left alone."""
  if not os.path.isdir(workdir):
    return
  files = [os.path.join(d, f) for d, _, fs in os.walk(workdir) for f in fs]
  if any(os.path.basename(f) not in _BOOKKEEPING and not f.endswith(".identity.json")
         for f in files):
    return
  for f in files:
    os.remove(f)
  for d, _, _ in sorted(os.walk(workdir), key=lambda x: -len(x[0])):
    os.rmdir(d)
