"""Every file hh reads or writes, through one path layer (``etils.epath``): a workdir, dataset,
tokenizer or report may be a local path or a ``gs://`` (``s3://``, ``az://``) URI.

Files are whole or absent: on a local filesystem written to a temporary name, then renamed (a
crash never leaves half a file a later stage would read); on object storage written as one
object, which appears only when its upload completes. JSON lines are read with ``file:line``
errors. The workdir lock keeps a second job out of a running job's workdir: ``flock`` on a local
or shared filesystem, a lock object with its owner's id and a heartbeat on object storage.
Checkpoints go through orbax, which takes the same paths (tensorstore writes the arrays).
"""
from __future__ import annotations

import builtins
import contextlib
import fcntl
import importlib.util
import io
import json
import os
import shutil
import socket
import sys
import threading
import time
import uuid

import numpy as np
from etils import epath

# Each object-store scheme and the package whose filesystem epath uses for it (fsspec's), or
# TensorFlow's gfile where TensorFlow is installed.
SCHEMES = {"gs": "gcsfs", "s3": "s3fs", "az": "adlfs"}


def scheme(p) -> str | None:
  """``'gs'`` for ``gs://bucket/x``; None for a local path."""
  p = os.fspath(p)
  return p.split("://", 1)[0] if "://" in p else None


def is_local(p) -> bool:
  return scheme(p) is None


def check(p) -> None:
  """A ValueError (one line) for a scheme hh cannot use here: unknown, or its filesystem
  package not installed."""
  s = scheme(p)
  if s is None:
    return
  if s not in SCHEMES:
    raise ValueError(f"{p}: no filesystem for {s}:// (hh reads and writes local paths and "
                     f"{', '.join(f'{k}://' for k in SCHEMES)})")
  if (importlib.util.find_spec(SCHEMES[s]) is None
      and importlib.util.find_spec("tensorflow") is None):
    raise ValueError(f"{p}: {s}:// needs the {SCHEMES[s]} package: pip install {SCHEMES[s]}"
                     + (" (or pip install -e '.[gcs]')" if s == "gs" else ""))


def path(p) -> epath.Path:
  check(p)
  return epath.Path(p)


def abspath(p) -> str:
  """A local path made absolute; a URI unchanged."""
  return os.path.abspath(p) if is_local(p) else os.fspath(p).rstrip("/")


def local_dir(workdir, name: str) -> str:
  """``<workdir>/<name>`` for a local workdir; for one on object storage, the same folder in a
  local cache (``$HH_CACHE``, default ``~/.cache/hh``). For files only local readers can use:
  TFDS's array_record datasets (built deterministically from the config, so every host of a
  job builds the same one)."""
  if is_local(workdir):
    return os.path.join(workdir, name)
  cache = os.environ.get("HH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "hh")
  return os.path.join(cache, scheme(workdir), os.fspath(workdir).split("://", 1)[1].strip("/"),
                      name)


def exists(p) -> bool:
  return os.path.exists(p) if is_local(p) else path(p).exists()


def isdir(p) -> bool:
  return os.path.isdir(p) if is_local(p) else path(p).is_dir()


def isfile(p) -> bool:
  return os.path.isfile(p) if is_local(p) else path(p).is_file()


def makedirs(p) -> None:
  """Creates ``p`` and its parents (exists_ok). On object storage folders are prefixes: no-op."""
  if is_local(p):
    os.makedirs(p, exist_ok=True)
  else:
    path(p).mkdir(parents=True, exist_ok=True)


def listdir(p) -> list[str]:
  """The names in folder ``p``, sorted."""
  if is_local(p):
    return sorted(os.listdir(p))
  return sorted(c.name for c in path(p).iterdir())


def open(p, mode: str = "r", encoding: str | None = None):  # noqa: A001 — the layer's open
  """A file object; text modes decode UTF-8 unless ``encoding`` says otherwise. Appending is
  for local files (``append_text`` works everywhere)."""
  if is_local(p):
    return builtins.open(p, mode, encoding=None if "b" in mode else (encoding or "utf-8"))
  if "a" in mode or "+" in mode:
    raise ValueError(f"{p}: object storage has no mode {mode!r}")
  return path(p).open(mode)


def read_bytes(p) -> bytes:
  with open(p, "rb") as f:
    return f.read()


def read_text(p) -> str:
  return read_bytes(p).decode("utf-8")


def read_json(p):
  return json.loads(read_text(p))


def remove(p) -> None:
  if is_local(p):
    os.remove(p)
  else:
    path(p).unlink()


def rmtree(p) -> None:
  """Removes a folder and everything in it; a missing one is fine."""
  if is_local(p):
    shutil.rmtree(p, ignore_errors=True)
  elif exists(p):
    path(p).rmtree()


def copy(src, dst) -> None:
  write_bytes(dst, read_bytes(src))


def rename(src, dst) -> None:
  """``src`` to ``dst``, replacing a file there: atomic on a local filesystem; on object storage
  a copy and a delete (of every object of a folder)."""
  if is_local(src) and is_local(dst):
    os.replace(src, dst)
  else:
    path(src).rename(dst)


def walk_files(p) -> list[str]:
  """Every file under folder ``p`` (full paths, sorted)."""
  out = []
  for name in listdir(p):
    child = os.path.join(p, name)
    out.extend(walk_files(child) if isdir(child) else [child])
  return out


def write_bytes(p, data: bytes):
  if not is_local(p):
    path(p).write_bytes(data)  # one object: visible only once whole
    return
  os.makedirs(os.path.dirname(os.path.abspath(p)), exist_ok=True)
  tmp = f"{p}.tmp{os.getpid()}"
  with builtins.open(tmp, "wb") as f:
    f.write(data)
  os.replace(tmp, p)


def append_text(p, text: str):
  """Appends to a log file: in place locally; on object storage the object is rewritten whole
  (logs are small; an object cannot be appended to)."""
  if is_local(p):  # one O_APPEND write: concurrent appends never interleave within a line
    data = memoryview(text.encode("utf-8"))
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
      while data:
        data = data[os.write(fd, data):]
    finally:
      os.close(fd)
  else:
    write_bytes(p, (read_bytes(p) if exists(p) else b"") + text.encode("utf-8"))


def write_text(p, text: str):
  write_bytes(p, text.encode("utf-8"))


def write_json(p, obj, indent: int = 1):
  """Keys in the object's own order (e.g. best-of-N's N = 1, 4, 16)."""
  write_text(p, json.dumps(obj, indent=indent) + "\n")


def write_figure(p, fig, dpi: int = 110):
  """A matplotlib figure as PNG, whole or absent."""
  buf = io.BytesIO()
  fig.savefig(buf, dpi=dpi, format="png")
  write_bytes(p, buf.getvalue())


def write_npz(p, **arrays: np.ndarray):
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  write_bytes(p, buf.getvalue())


def read_npz(p) -> dict[str, np.ndarray]:
  """Arrays only: object arrays (pickles) are refused."""
  with np.load(io.BytesIO(read_bytes(p)), allow_pickle=False) as z:
    return {k: z[k] for k in z.files}


def read_jsonl(p, required: dict[str, type]) -> list[dict]:
  """The JSON objects of a JSON-lines file, each with ``required`` keys of the given types; a
  missing or empty file, bad UTF-8 or JSON, or a row without a key is a ValueError naming
  ``path:line``. Blank lines are skipped; a UTF-8 BOM and CRLF line ends are accepted."""
  if not isfile(p):
    raise FileNotFoundError(f"{p}: no such file")
  raw = read_bytes(p)
  try:
    text = raw.decode("utf-8-sig")
  except UnicodeDecodeError as e:
    line = raw[:e.start].count(b"\n") + 1
    raise ValueError(f"{p}:{line}: not UTF-8 text") from None
  rows = []
  for n, line in enumerate(text.splitlines(), 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f"{p}:{n}: not a JSON object ({e.msg})") from None
    if not isinstance(row, dict):
      raise ValueError(f"{p}:{n}: expected a JSON object, got {type(row).__name__}")
    for key, kind in required.items():
      if not isinstance(row.get(key), kind):
        raise ValueError(f"{p}:{n}: expected key {key!r} of type {kind.__name__}")
    rows.append(row)
  if not rows:
    raise ValueError(f"{p}: no rows (an empty file)")
  return rows


_HELD: dict[str, list] = {}  # lock path → [lock, depth]: re-entrant within a process

# The object-store lock: the holder rewrites its lock object every HEARTBEAT_S seconds; one whose
# heartbeat is older than STALE_S is a dead holder's and is taken over.
HEARTBEAT_S, STALE_S = 30.0, 120.0


def _refuse(workdir, holder: str):
  raise ValueError(f"{workdir}: in use by another hh process ({holder}); wait for it to "
                   "finish or use another workdir")


def _owner() -> str:
  return f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"


class _FileLock:
  """``flock`` on a local or shared filesystem: the kernel drops it when the holder exits,
  killed or not, so a SIGKILL leaves no stale lock."""

  def __init__(self, workdir, lock_path):
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    f = builtins.open(lock_path, "a+")
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      holder = f.read().strip() or "unknown process"
      f.close()
      _refuse(workdir, holder)
    f.seek(0)
    f.truncate()
    f.write(_owner() + "\n")
    f.flush()
    self._f = f

  def release(self):
    fcntl.flock(self._f, fcntl.LOCK_UN)
    self._f.close()


class _ObjectLock:
  """A lock object on object storage (no ``flock`` there): JSON with the owner's id, who it is
  and a heartbeat time, rewritten every ``heartbeat_s`` by a thread while held and deleted on
  release. Taking it: refused while another owner's heartbeat is fresher than ``stale_s``; else
  the object is written, and read back after ``settle_s`` — two takers at once both write, the
  later write wins and the other reads a foreign id and is refused. A killed holder's lock is
  taken over once stale (named on stderr)."""

  def __init__(self, workdir, lock_path, heartbeat_s=None, stale_s=None, settle_s=1.0):
    self._path, self._id = lock_path, uuid.uuid4().hex
    self._who = _owner()
    self._heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
    stale_s = STALE_S if stale_s is None else stale_s
    held = self._read()
    if held is not None:
      age = time.time() - held["heartbeat"]
      if age < stale_s:
        _refuse(workdir, f"{held['who']}, heartbeat {age:.0f} s ago")
      print(f"hh: {workdir}: taking over the lock of {held['who']} (no heartbeat for "
            f"{age:.0f} s)", file=sys.stderr, flush=True)
    self._beat()
    time.sleep(settle_s)
    held = self._read()
    if held is None or held["id"] != self._id:
      _refuse(workdir, held["who"] if held else "a process that took it at the same moment")
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._heartbeats, daemon=True)
    self._thread.start()

  def _read(self) -> dict | None:
    try:
      held = json.loads(read_text(self._path))
      return held if {"id", "who", "heartbeat"} <= set(held) else None
    except (FileNotFoundError, ValueError):
      return None

  def _beat(self):
    write_json(self._path, {"id": self._id, "who": self._who, "heartbeat": time.time()})

  def _heartbeats(self):
    while not self._stop.wait(self._heartbeat_s):
      self._beat()

  def release(self):
    self._stop.set()
    self._thread.join()
    held = self._read()
    if held is not None and held["id"] == self._id:
      remove(self._path)


@contextlib.contextmanager
def workdir_lock(workdir: str, **object_lock_args):
  """Holds an exclusive lock on ``workdir`` (``<workdir>/.hh.lock``): a second process that
  tries the same workdir gets a ValueError naming the holder. ``flock`` locally, a heartbeat
  lock object on object storage (``_ObjectLock``; ``object_lock_args`` set its times). Nested
  use in one process is allowed (a pipeline running its stages)."""
  lock_path = os.path.join(abspath(workdir), ".hh.lock")
  if lock_path in _HELD:
    _HELD[lock_path][1] += 1
    try:
      yield
    finally:
      _HELD[lock_path][1] -= 1
    return
  lock = (_FileLock(workdir, lock_path) if is_local(workdir)
          else _ObjectLock(workdir, lock_path, **object_lock_args))
  _HELD[lock_path] = [lock, 1]
  try:
    yield
  finally:
    del _HELD[lock_path]
    lock.release()


_BOOKKEEPING = ("config.json", ".hh.lock")


def remove_if_only_bookkeeping(workdir: str):
  """Removes ``workdir`` when it holds nothing but what a run writes before its work starts
  (``config.json``, ``*.identity.json``, the lock, empty folders): a run that failed on bad input
  leaves no trace in a workdir it created, and a folder with any real output is left alone."""
  if not isdir(workdir):
    return
  files = walk_files(workdir)
  if any(os.path.basename(f) not in _BOOKKEEPING and not f.endswith(".identity.json")
         for f in files):
    return
  rmtree(workdir)
