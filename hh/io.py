"""Files that are either whole or absent: written to a temporary name, then renamed (a crash
never leaves half a file that a later stage would read)."""
from __future__ import annotations

import io
import json
import os

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
  write_text(path, json.dumps(obj, indent=indent, sort_keys=True) + "\n")


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
