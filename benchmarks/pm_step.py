"""PM train-step throughput and MFU: the 13M shape, 8 pairs = 16 sequences × 512 tokens, fp32.

  python benchmarks/pm_step.py

The step is the PM stage's jitted update (both sequences of each pair through the trunk in one
batch, scalar head at the EOC token, pairwise loss, AdamW), sharded over all local devices. The
trunk runs its last layer at the EOC token only and attention in causal query blocks. MFU counts
the full model's FLOPs (``common.lm_train_flops`` without a head: every position through every
layer, attention included), as the PyTorch side does, against a bf16 matmul peak with float32
accumulation; the FLOPs the read-out needs (``common.pm_train_flops``) are printed too.
A ratio to another framework holds only when measured side by side in the same hour
(``benchmarks/compare.py``, W1), never against a figure from another day.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from configs import pm  # noqa: E402
from hh import sharding  # noqa: E402
from hh.pm import train as pm_train  # noqa: E402
from hh.train import state as state_lib  # noqa: E402


def measure(size="13M", pairs=8, seq=512, vocab=32_000, dtype="float32", remat="none",
            iters=3, unroll=1) -> dict:
  """The PM stage's own build (hh/pm/train.py) for one phase of the given shape, timed."""
  config = pm.get_config(f"size={size}")
  config.model.dtype, config.model.remat_policy = dtype, remat
  config.model.scan_unroll = unroll
  phase = config.pm.finetune
  phase.seq_len, phase.batch_pairs = seq, pairs
  mesh = sharding.make_mesh(config.mesh)
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(5, vocab, (2 * pairs, seq)).astype(np.int32),
           "mask": np.ones((2 * pairs, seq), np.int32),
           "eoc": np.full(2 * pairs, seq - 1, np.int32), "weight": np.ones(pairs, np.float32)}
  with jax.set_mesh(mesh):
    built = pm_train.build(config, phase, mesh, vocab, steps=1000)
    holder = {"state": state_lib.create_state(built.init, built.shardings)}
    batch = sharding.global_batch(batch, mesh)

    def run(b):
      holder["state"], m = built.train_step(holder["state"], b)
      return m

    seconds = common.time_fn(run, batch, warmup=2, iters=iters)
  m = config.model
  tokens = 2 * pairs * seq
  flops = common.pm_train_flops(m.n_layer, m.d_model, m.d_ff, 2 * pairs, seq)
  full = common.lm_train_flops(m.n_layer, m.d_model, m.d_ff, 0, tokens, seq)  # every position
  return {"seconds": seconds, "tokens_per_sec": tokens / seconds, "pairs_per_sec": pairs / seconds,
          "flops": flops, "full_trunk_flops": full, "model": m}


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="13M")
  ap.add_argument("--pairs", type=int, default=8)
  ap.add_argument("--seq", type=int, default=512)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--remat", default="none")
  ap.add_argument("--iters", type=int, default=3)
  ap.add_argument("--unroll", type=int, default=1, help="config.model.scan_unroll")
  args = ap.parse_args()
  r = measure(args.size, args.pairs, args.seq, dtype=args.dtype, remat=args.remat,
              iters=args.iters, unroll=args.unroll)
  peak = common.matmul_peak(jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
  peak *= jax.device_count()
  m = r["model"]
  print(f"device: {jax.devices()[0].device_kind} × {jax.device_count()}; PM size {args.size} "
        f"(L={m.n_layer}, d={m.d_model}, H={m.n_head}, F={m.d_ff}, V=32000), {args.pairs} pairs "
        f"= {2 * args.pairs} × {args.seq} tokens, {args.dtype}, scan unroll {args.unroll}, AdamW")
  print(f"step {r['seconds'] * 1e3:.1f} ms  |  {r['tokens_per_sec']:,.0f} tokens/s  |  "
        f"{r['pairs_per_sec']:.2f} pairs/s  |  {r['flops'] / r['seconds'] / 1e9:,.1f} GFLOP/s")
  full = r["full_trunk_flops"]
  print(f"model FLOPs/step {r['flops'] / 1e12:.3f} T (read-out trunk; the full trunk would need "
        f"{full / 1e12:.3f} T, i.e. {full / r['seconds'] / 1e9:,.1f} GFLOP/s-equivalent)")
  # MFU by the full-model formula (PaLM's, attention included: every position through every
  # layer), the same one the PyTorch side counts; the read-out's saving shows as a higher MFU
  print(f"measured {args.dtype} matmul peak {peak / 1e9:,.1f} GFLOP/s  →  MFU "
        f"{full / r['seconds'] / peak:.1%} (full-model FLOPs; {r['flops'] / r['seconds'] / peak:.1%} "
        "of the read-out's own)")
  common.emit("hh_pm_step", tokens_per_s=r["tokens_per_sec"], step_s_median=r["seconds"],
              peak_matmul_gflops=peak / 1e9, mfu=full / r["seconds"] / peak,
              mfu_read_out=r["flops"] / r["seconds"] / peak)


if __name__ == "__main__":
  main()
