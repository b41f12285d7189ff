"""LM train-step throughput and model FLOPs utilisation (MFU) against a measured matmul peak.

  python benchmarks/lm_step.py                        # 13M shape, batch 16×512, fp32 (CPU)
  python benchmarks/lm_step.py --size=810M --dtype=bfloat16 --batch=8 --seq=2048   # a GPU

The 13M shape is 4 layers, d_model 512, 8 heads, d_ff 2048, vocab 32,000. The step is the one
hh.main runs (jitted, sharded over all local devices, donated state, AdamW).
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
from configs import lm  # noqa: E402
from hh import sharding  # noqa: E402
from hh.lm import train as lm_train  # noqa: E402
from hh.train import state as state_lib  # noqa: E402


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="13M")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--seq", type=int, default=512)
  ap.add_argument("--vocab", type=int, default=32_000)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--remat", default="none")
  ap.add_argument("--attn_chunk", type=int, default=None, help="default: the config's")
  ap.add_argument("--iters", type=int, default=5)
  ap.add_argument("--unroll", type=int, default=1, help="config.model.scan_unroll")
  args = ap.parse_args()

  config = lm.get_config(f"size={args.size}")
  config.model.dtype, config.model.remat_policy = args.dtype, args.remat
  config.model.scan_unroll = args.unroll
  config.lm.data.batch_size, config.lm.data.seq_len = args.batch, args.seq
  if args.attn_chunk is not None:
    config.model.attn_chunk = args.attn_chunk
  config.tokenizer.vocab_size = args.vocab
  mesh = sharding.make_mesh(config.mesh)
  rng = np.random.default_rng(0)
  windows = rng.integers(0, args.vocab, (args.batch, args.seq + 1)).astype(np.int32)
  batch_np = {"inputs": windows[:, :-1], "targets": windows[:, 1:],
              "weights": np.ones((args.batch, args.seq), np.float32)}
  with jax.set_mesh(mesh):
    built = lm_train.build(config, mesh, args.vocab)
    state = state_lib.create_state(built.init, built.shardings)
    batch = sharding.global_batch(batch_np, mesh)
    holder = {"state": state}

    def step(b):  # the state is donated: thread it through
      holder["state"], m = built.train_step(holder["state"], b)
      return m

    seconds = common.time_fn(step, batch, warmup=2, iters=args.iters)
  m = config.model
  tokens = args.batch * args.seq
  flops = common.lm_train_flops(m.n_layer, m.d_model, m.d_ff, args.vocab, tokens, args.seq)
  peak_dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
  peak = common.matmul_peak(peak_dtype) * jax.device_count()
  achieved = flops / seconds
  print(f"device: {jax.devices()[0].device_kind} × {jax.device_count()}; size {args.size} "
        f"(L={m.n_layer}, d={m.d_model}, H={m.n_head}, F={m.d_ff}, V={args.vocab}), batch "
        f"{args.batch}×{args.seq}, {args.dtype}, remat {args.remat}")
  print(f"step {seconds * 1e3:.1f} ms  |  {tokens / seconds:,.0f} tokens/s  |  "
        f"{achieved / 1e9:,.1f} GFLOP/s model FLOPs ({flops / 1e9:,.1f} GFLOP/step)")
  print(f"measured {args.dtype} matmul peak {peak / 1e9:,.1f} GFLOP/s  →  MFU "
        f"{achieved / peak:.1%}")
  common.emit("hh_lm_step", tokens_per_s=tokens / seconds, step_s_median=seconds,
              peak_matmul_gflops=peak / 1e9, mfu=achieved / peak)


if __name__ == "__main__":
  main()
