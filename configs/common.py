"""Helpers shared by the config files (big_vision's ``parse_arg`` pattern)."""
from __future__ import annotations

import os
import pathlib

import ml_collections

# The shared data folder that sits beside a checkout of hh (see ../shared/data/README.md);
# HH_DATA_DIR points elsewhere.
REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("HH_DATA_DIR", REPO_ROOT.parent / "shared" / "data"))


def parse_arg(arg: str | None, **defaults) -> ml_collections.ConfigDict:
  """Parses ``"size=13M,runlocal"`` into a ConfigDict typed by ``defaults``.

  A bare word sets a boolean default to True. A key not in ``defaults`` is an error naming
  the allowed keys, so ``configs/lm.py:sise=13M`` fails instead of silently being ignored.
  """
  out = ml_collections.ConfigDict(defaults)
  for part in filter(None, (arg or "").split(",")):
    key, sep, value = part.partition("=")
    if key not in defaults:
      raise ValueError(f"config argument {key!r} unknown; allowed: {sorted(defaults)}")
    default = defaults[key]
    if not sep:
      if not isinstance(default, bool):
        raise ValueError(f"config argument {key!r} needs a value ({key}=...)")
      out[key] = True
    elif isinstance(default, bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(default)(value)
  return out
