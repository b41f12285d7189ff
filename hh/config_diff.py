"""Which keys of two nested configs differ: for refusing a workdir made by another config."""
from __future__ import annotations

from typing import Any


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"a.b.c": leaf} for nested dicts; lists and tuples are leaves."""
  if not isinstance(tree, dict):
    return {prefix: tree}
  out = {}
  for k, v in tree.items():
    out |= flatten(v, f"{prefix}.{k}" if prefix else str(k))
  return out


def differing_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
  """Sorted dotted keys whose values differ, or that only one side has."""
  a, b = flatten(old, prefix), flatten(new, prefix)
  norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731  (JSON has no tuples)
  return sorted(k for k in a.keys() | b.keys()
                if k not in a or k not in b or norm(a[k]) != norm(b[k]))
