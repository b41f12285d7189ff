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
