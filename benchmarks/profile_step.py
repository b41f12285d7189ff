"""Where a train step's time goes, by op class, on this machine (issue: "measure first").

  python benchmarks/profile_step.py                  # the W1 PM step: 13M, 16 × 512, fp32
  python benchmarks/profile_step.py --step=lm        # the 13M LM step, 16 × 512
  python benchmarks/profile_step.py --dtype=bfloat16

Traces one step with ``jax.profiler`` (XLA's CPU runtime records every executed thunk: a dot, a
fusion, a copy), reads the compiled HLO to classify each thunk by what it computes, and prints
per class: thunk time, share of all thunk time, FLOPs (dots: 2 × output size × contracted size) and the
rate against this machine's measured matmul peak:

* matmul: attention — the batched q·k and p·v products (and their gradients);
* matmul: dense — every other product (projections, MLP, the LM head);
* attention: mask/softmax — the non-matmul work under the attention module;
* optimizer and clipping — what runs outside the model (AdamW, the global norm);
* other model work — layer norms, GELU, embeddings, residuals, the loss, converts, copies;
* host and runtime — the step's wall time not inside any thunk (dispatch, waits), and the
  dots XLA leaves to Eigen (not fused into a YNNPACK call): Eigen runs them asynchronously,
  outside their thunk's trace event, so their time lands here; the script counts them.
"""
from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from hh import sharding  # noqa: E402
from hh.train import state as state_lib  # noqa: E402

_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (\w+)\[([\d,]*)\]\S* (\w[\w-]*)\((.*)$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OPNAME = re.compile(r'op_name="([^"]*)"')
_CONTRACT = re.compile(r"lhs_contracting_dims=\{([\d,]*)\}")
CLASSES = ("matmul: attention", "matmul: dense", "attention: mask/softmax",
           "optimizer and clipping", "other model work", "host and runtime")


def parse_hlo(text: str):
  """(instructions name → (opcode, shape, op_name, called computation), computation name →
  its instruction names)."""
  instrs, comps, current = {}, collections.defaultdict(list), None
  for line in text.splitlines():
    head = re.match(r"^(?:ENTRY )?%?([\w.\-]+) ", line)
    if head and not line.startswith(" ") and "{" in line:
      current = head.group(1)
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, _, dims, opcode, rest = m.groups()
    shape = tuple(int(d) for d in dims.split(",") if d)
    called = _CALLS.search(rest)
    opname = _OPNAME.search(rest)
    contract = _CONTRACT.search(rest)
    operands = re.findall(r"%([\w.\-]+)", rest.split(")")[0])
    instrs[name] = dict(opcode=opcode, shape=shape, op_name=opname.group(1) if opname else "",
                        called=called.group(1) if called else None, operands=operands,
                        contract=[int(c) for c in contract.group(1).split(",") if c]
                        if contract else None)
    comps[current].append(name)
  return instrs, comps


def _dots(name: str, instrs, comps, seen=None) -> list[dict]:
  """The dot instructions an executed thunk runs (itself, or inside its fused computation)."""
  seen = seen if seen is not None else set()
  ins = instrs.get(name)
  if ins is None or name in seen:
    return []
  seen.add(name)
  if ins["opcode"] == "dot":
    return [ins]
  out = []
  if ins["called"] and ins["opcode"] == "fusion":
    for inner in comps.get(ins["called"], []):
      out += _dots(inner, instrs, comps, seen)
  return out


def dot_flops(dot: dict, instrs) -> float:
  lhs = instrs.get(dot["operands"][0]) if dot["operands"] else None
  if lhs is None or dot["contract"] is None:
    return 0.0
  return 2.0 * math.prod(dot["shape"]) * math.prod(lhs["shape"][d] for d in dot["contract"])


def classify(name: str, instrs, comps) -> tuple[str, float]:
  ins = instrs[name]
  dots = _dots(name, instrs, comps)
  names = [ins["op_name"]] + [d["op_name"] for d in dots]
  attn = any("/attn/" in n or "attend" in n for n in names)
  if dots:
    flops = sum(dot_flops(d, instrs) for d in dots)
    batched = any(len(d["shape"]) > 2 for d in dots)
    return ("matmul: attention" if attn and batched else "matmul: dense"), flops
  if attn:
    return "attention: mask/softmax", 0.0
  if any(k in ins["op_name"] for k in ("Model", "Transformer", "jvp(")):  # jvp: the loss too
    return "other model work", 0.0
  if ins["op_name"]:
    return "optimizer and clipping", 0.0
  return "other model work", 0.0


def build_step(kind: str, dtype: str, unroll: int = 1):
  """(the jitted step, its state, its batch): the stages' own builds at the W1 / LM shapes."""
  rng = np.random.default_rng(0)
  if kind == "pm":
    from configs import pm
    from hh.pm import train as pm_train
    config = pm.get_config("size=13M")
    config.model.dtype, config.model.remat_policy = dtype, "none"
    config.model.scan_unroll = unroll
    phase = config.pm.finetune
    phase.seq_len, phase.batch_pairs = 512, 8
    mesh = sharding.make_mesh(config.mesh)
    batch = {"tokens": rng.integers(5, 32_000, (16, 512)).astype(np.int32),
             "mask": np.ones((16, 512), np.int32), "eoc": np.full(16, 511, np.int32),
             "weight": np.ones(8, np.float32)}
    with jax.set_mesh(mesh):
      built = pm_train.build(config, phase, mesh, 32_000, steps=1000)
  else:
    from configs import lm
    from hh.lm import train as lm_train
    config = lm.get_config("size=13M")
    config.model.dtype, config.model.remat_policy = dtype, "none"
    config.model.scan_unroll = unroll
    config.lm.data.batch_size, config.lm.data.seq_len = 16, 512
    config.tokenizer.vocab_size = 32_000
    mesh = sharding.make_mesh(config.mesh)
    windows = rng.integers(0, 32_000, (16, 513)).astype(np.int32)
    batch = {"inputs": windows[:, :-1], "targets": windows[:, 1:],
             "weights": np.ones((16, 512), np.float32)}
    with jax.set_mesh(mesh):
      built = lm_train.build(config, mesh, 32_000)
  with jax.set_mesh(mesh):
    state = state_lib.create_state(built.init, built.shardings)
    batch = sharding.global_batch(batch, mesh)
  return built.train_step, state, batch, mesh


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--step", default="pm", choices=("pm", "lm"))
  ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
  ap.add_argument("--steps", type=int, default=2, help="traced steps (times are per step)")
  ap.add_argument("--top", type=int, default=12, help="list this many of the largest thunks")
  ap.add_argument("--unroll", type=int, default=1, help="config.model.scan_unroll")
  args = ap.parse_args()
  step, state, batch, mesh = build_step(args.step, args.dtype, args.unroll)
  with jax.set_mesh(mesh):
    text = step.lower(state, batch).compile().as_text()
    for _ in range(2):  # compile and warm up
      state, m = step(state, batch)
      jax.block_until_ready(m)
    trace_dir = tempfile.mkdtemp(prefix="hh_profile_")
    jax.profiler.start_trace(trace_dir)
    t0 = time.perf_counter()
    for _ in range(args.steps):
      state, m = step(state, batch)
      jax.block_until_ready(m)
    wall = (time.perf_counter() - t0) / args.steps
    jax.profiler.stop_trace()
  instrs, comps = parse_hlo(text)
  path = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
  with gzip.open(path) as f:
    events = json.load(f)["traceEvents"]
  seconds, flops = collections.Counter(), collections.Counter()
  by_thunk, spans = collections.Counter(), []
  eigen = [0.0, 0.0]  # Eigen dot thunks per step and their FLOPs
  for e in events:  # one event per executed thunk; the runtime may run two at once
    if e.get("ph") != "X" or e["name"] not in instrs:
      continue
    cls, fl = classify(e["name"], instrs, comps)
    seconds[cls] += e["dur"] / 1e6 / args.steps
    flops[cls] += fl / args.steps
    by_thunk[(cls, e["name"])] += e["dur"] / 1e6 / args.steps
    if instrs[e["name"]]["opcode"] == "dot":
      eigen[0] += 1 / args.steps
      eigen[1] += fl / args.steps
    spans.append((e["ts"], e["ts"] + e["dur"]))
  busy, end = 0.0, -math.inf  # the union of the thunks' intervals
  for a, b in sorted(spans):
    busy += max(0.0, b - max(a, end))
    end = max(end, b)
  busy = busy / 1e6 / args.steps
  thunk_total = sum(seconds.values())
  seconds["host and runtime"] = max(wall - busy, 0.0)
  peak = common.matmul_peak(jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
  print(f"{args.step.upper()} step, 13M (L=4, d=512, F=2048, V=32000), 16 × 512 tokens, "
        f"{args.dtype}, scan unroll {args.unroll}, {jax.device_count()} device(s): "
        f"{wall * 1e3:,.0f} ms per step, thunks "
        f"busy {busy * 1e3:,.0f} ms (their times sum to {thunk_total * 1e3:,.0f} ms: the "
        f"runtime overlaps some); measured {args.dtype} matmul peak {peak / 1e9:,.0f} GFLOP/s")
  print(f"{'class':<26}{'thunk ms':>9}{'share':>8}{'GFLOP':>9}{'GFLOP/s':>9}{'% of peak':>11}"
        f"{'ms at peak':>12}")
  for cls in CLASSES:
    s, fl = seconds.get(cls, 0.0), flops.get(cls, 0.0)
    rate = fl / s / 1e9 if s and fl else float("nan")
    at_peak = f"{fl / peak * 1e3:12.0f}" if fl else f"{'':12}"
    share = s / (thunk_total if cls != "host and runtime" else wall)
    print(f"{cls:<26}{s * 1e3:9.0f}{share:8.1%}{fl / 1e9:9.1f}{rate:9.1f}"
          f"{rate * 1e9 / peak:11.1%}{at_peak}".replace("nan%", "    ").replace("nan", "   "))
  total_fl = sum(flops.values())
  print(f"{'step (wall)':<26}{wall * 1e3:9.0f}{'':8}{total_fl / 1e9:9.1f}"
        f"{total_fl / wall / 1e9:9.1f}{total_fl / wall / peak:11.1%}{total_fl / peak * 1e3:12.0f}")
  if eigen[0]:
    print(f"{eigen[0]:.0f} dots ({eigen[1] / 1e9:.1f} GFLOP) ran on Eigen, asynchronously: most of "
          f"their time is under 'host and runtime', not their class")
  print(f"largest thunks ({args.top}):")
  for (cls, name), s in by_thunk.most_common(args.top):
    print(f"  {s * 1e3:7.0f} ms  {cls:<24} {name:<28} {instrs[name]['op_name'][-90:]}")
  common.emit(f"hh_profile_{args.step}", step_s=wall, peak_matmul_gflops=peak / 1e9,
              **{re.sub(r"\W+", "_", k).strip("_") + "_s": v for k, v in seconds.items()})


if __name__ == "__main__":
  main()
