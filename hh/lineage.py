"""The lineage of a PM or policy made by the online loop (hh/online/loop.py): which PM trained the
policy, which comparison sets and tranches (with their hashes) trained that PM, which policies
produced each tranche and how it was labelled — down to π0 and the LM.

  python -m hh.lineage runs/online/online/iter_3/ppo      # a policy (its PPO workdir or policy/)
  python -m hh.lineage runs/online/online/iter_2/pm       # a PM

The datasets are read from the PM's own ``config.json`` (what it was trained on, written before
it ran), the tranches from their iteration's ``stages/tranche.json`` record, and the code
version from the iteration's ``manifest.json``.
"""
from __future__ import annotations

import os
import sys

from hh import io


def _read(path: str) -> dict:
  return io.read_json(path)


def _iteration(path: str) -> str | None:
  """The ``iter_<i>`` folder that holds ``path``, if any."""
  p = io.abspath(path)
  while p != os.path.dirname(p):
    if os.path.basename(p).startswith("iter_") and io.exists(os.path.join(p, "stages")):
      return p
    p = os.path.dirname(p)
  return None


def tranche_sets(pm_dir: str) -> list[dict]:
  """The comparison sets a PM was trained on: ``{"spec", "weight", "phase"}`` and, for a
  tranche (``hh_rlhf/<subset>@<dir>:<split>``), its dir, subset, split, sha256 and producers."""
  cfg = _read(os.path.join(pm_dir, "config.json"))["pm"]
  out = []
  if cfg.get("pmp_from"):  # finetuned from another PM's PMP phase
    parent = os.path.dirname(io.abspath(cfg["pmp_from"].rstrip(os.sep)))
    out += [{"spec": spec, "weight": weight, "phase": f"pmp (of {parent})"}
            for spec, weight in _read(os.path.join(parent, "config.json"))["pm"]["pmp"]["datasets"]]
  for phase in ("pmp", "finetune"):
    for spec, weight in cfg[phase]["datasets"]:
      item = {"spec": spec, "weight": weight, "phase": phase}
      if "@" in spec:
        name, rest = spec.split("@", 1)
        folder, _, split = rest.partition(":")  # a split may carry a slice: train[:90]
        split = split.split("[", 1)[0] or "train"
        subset = name.split("/", 1)[1]
        rec = _read(os.path.join(os.path.dirname(folder), "stages", "tranche.json"))
        info = rec["files"].get(split, {}).get(subset, {})
        item |= {"tranche": folder, "subset": subset, "split": split, "kind": rec["kind"],
                 "rows": info.get("rows"), "sha256": info.get("sha256"),
                 "made_by": rec["made_by"], "labels": rec["labels"],
                 "best_of": rec.get("best_of", 1), "reranked_by": rec.get("reranked_by")}
      out.append(item)
  return out


def _policy_dirs(path: str) -> tuple[str, str]:
  """A PPO workdir or its ``policy/`` export → (ppo workdir, policy dir)."""
  path = io.abspath(path.rstrip(os.sep))
  if os.path.basename(path) == "policy":
    return os.path.dirname(path), path
  return path, os.path.join(path, "policy")


def lines(path: str, indent: str = "", seen: set | None = None) -> list[str]:
  """The lineage of the PM or policy at ``path`` as indented text lines."""
  seen = set() if seen is None else seen
  path = io.abspath(path.rstrip(os.sep))
  if path in seen:
    return [f"{indent}(see above: {path})"]
  seen.add(path)
  ppo_dir = _policy_dirs(path)[0]
  cfg_path = os.path.join(ppo_dir, "config.json")
  if not io.exists(cfg_path) and not io.exists(os.path.join(path, "config.json")):
    return [f"{indent}{path} (no config.json: not made by hh, or not finished)"]
  # a PPO workdir (standalone, or a pipeline's ppo/ folder, whose config.json is the pipeline's)
  if os.path.basename(path) == "policy" or io.exists(
      os.path.join(ppo_dir, "ppo.identity.json")) or _read(cfg_path).get("stage") == "ppo":
    ppo_dir, _ = _policy_dirs(path)
    ppo = _read(os.path.join(ppo_dir, "config.json"))["ppo"]
    it = _iteration(ppo_dir)
    version = _read(os.path.join(it, "manifest.json"))["code_version"] \
        if it and io.exists(os.path.join(it, "manifest.json")) else "?"
    out = [f"{indent}policy {ppo_dir} (PPO from π0 {ppo['init_from']}; code {version})",
           f"{indent}  trained against:"]
    return out + lines(ppo["pm"], indent + "    ", seen)
  if not io.exists(os.path.join(path, "config.json")):
    return [f"{indent}{path} (not made by this loop: no config.json)"]
  it = _iteration(path)
  lm = _read(os.path.join(it, "manifest.json"))["pm"]["init_from"] \
      if it and io.exists(os.path.join(it, "manifest.json")) else "?"
  out = [f"{indent}PM {path} (from the LM {lm}), trained on:"]
  for s in tranche_sets(path):
    if "tranche" not in s:
      out.append(f"{indent}  {s['phase']}: {s['spec']} ×{s['weight']}")
      continue
    out.append(f"{indent}  {s['phase']}: tranche {s['subset']}:{s['split']} of {s['tranche']} "
               f"×{s['weight']} ({s['kind']}, {s['rows']} rows, sha256 {str(s['sha256'])[:12]}, "
               f"labels: {s['labels']}), sampled from:")
    for producer in s["made_by"]:
      if os.path.basename(producer.rstrip(os.sep)) == "policy":
        out += lines(producer, indent + "    ", seen)
      else:
        out.append(f"{indent}    π0 {producer}")
    if s["reranked_by"]:  # each response the best of k samples under a PM
      out.append(f"{indent}    each response the best of {s['best_of']} samples under:")
      out += lines(s["reranked_by"], indent + "      ", seen)
  return out


def main(argv: list[str]):
  from absl import app
  if len(argv) != 2:
    raise app.UsageError("usage: python -m hh.lineage PM_OR_POLICY_DIR")
  if not io.isdir(argv[1]):
    sys.exit(f"hh.lineage: error: {argv[1]}: no such folder")
  print("\n".join(lines(argv[1])))


if __name__ == "__main__":
  from absl import app
  app.run(main)
