"""Generation throughput of hh's sampler and its fraction of the memory-bandwidth roofline.

  python benchmarks/generate.py                     # 13M shape, 16 prompts × 64 tokens, 64 new
  python benchmarks/generate.py --batch 64          # and the batch scaling
  python benchmarks/generate.py --size=810M --dtype=bfloat16 --batch 64   # on a GPU

The workload of the PyTorch baseline's W2 (``benchmarks/compare.py --workload W2``, HF ``generate``): 4 layers, d 512,
8 heads, d_ff 2048, vocab 32,000, random weights and prompt ids, 64 new tokens per row with no
early stop, temperature 1, top-k and top-p off, fp32. The sampler is hh's own jitted program
(hh/policy/sample.py): prefill, then while-loops of one-token steps over a KV cache that grows by
``--cache_block`` slots at a time.

A decode step must read every weight once and the cache written so far: its bytes over the
step's time, against a bandwidth measured here (a large on-device reduction), is the roofline
fraction. Ends with one JSON line (``gen_tokens_per_s``, the measured peaks) like the PyTorch baseline's.
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
from configs import lm, policy  # noqa: E402
from hh import sharding  # noqa: E402
from hh.lm import train as lm_train  # noqa: E402
from hh.policy import sample as sample_lib  # noqa: E402
from hh.train import state as state_lib  # noqa: E402


def memory_bandwidth(mbytes: int | None = None, iters: int = 5) -> float:
  """Bytes/s of a reduction over a large float32 array (each byte read once): 512 MiB on CPU,
  4 GiB on an accelerator (several times its cache)."""
  mbytes = mbytes or (512 if jax.default_backend() == "cpu" else 4096)
  n = mbytes * 2**20 // 4
  x = jnp.ones((n,), jnp.float32)
  f = jax.jit(lambda a: a.sum())
  return n * 4 / min(common.time_fn(f, x, iters=1) for _ in range(iters))


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--size", default="13M")
  ap.add_argument("--batch", type=int, default=16)
  ap.add_argument("--prompt", type=int, default=64)
  ap.add_argument("--new", type=int, default=64)
  ap.add_argument("--vocab", type=int, default=32_000)
  ap.add_argument("--dtype", default="float32")
  ap.add_argument("--iters", type=int, default=3)
  ap.add_argument("--cache_block", type=int, default=None,
                  help="the KV cache grows by this many slots at a time; 0: the whole cache "
                       "(default: config.sampling.cache_block)")
  args = ap.parse_args()

  config = lm.get_config(f"size={args.size}")
  if args.cache_block is None:
    args.cache_block = policy.sampling(args.size).cache_block
  config.model.dtype = args.dtype
  if args.dtype == "bfloat16":
    config.model.param_dtype = "bfloat16"  # serving weights: half the bytes a step reads
  mesh = sharding.make_mesh(config.mesh)
  rng = np.random.default_rng(0)
  prompts = rng.integers(5, args.vocab, (args.batch, args.prompt)).astype(np.int32)
  masks = np.ones_like(prompts)
  with jax.set_mesh(mesh):
    built = lm_train.build(config, mesh, args.vocab)
    params = state_lib.create_state(built.init, built.shardings).params
    times = {}
    for n in (1, args.new):
      cfg = sample_lib.SamplingConfig(max_new_tokens=n, temperature=1.0, stop_ids=(),
                                      cache_block=args.cache_block)
      sampler = sample_lib.Sampler(built.model, mesh, sharding.rules(config), cfg,
                                   buckets=(args.prompt,))
      times[n] = common.time_fn(lambda p: sampler(p, prompts, masks, np.arange(args.batch),
                                                  jax.random.PRNGKey(0))["tokens"],
                                params, warmup=1, iters=args.iters)
    bandwidth = memory_bandwidth()
  peak = common.matmul_peak(jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
  m = config.model
  step_s = (times[args.new] - times[1]) / (args.new - 1)
  gen = args.batch * args.new / times[args.new]
  flat = jax.tree_util.tree_flatten_with_path(params)[0]
  weight_bytes = sum(x.size * x.dtype.itemsize for path, x in flat  # the embedding: B rows only
                     if x.ndim >= 2 and "embed" not in jax.tree_util.keystr(path))
  cache_bytes = 2 * m.n_layer * args.batch * (args.prompt + args.new / 2) * m.d_model * \
      jnp.dtype(m.dtype).itemsize  # mean cache length over the decode
  step_bytes = weight_bytes + cache_bytes
  print(f"device: {jax.devices()[0].device_kind} × {jax.device_count()}; size {args.size} "
        f"(L={m.n_layer}, d={m.d_model}, V={args.vocab}), {args.batch} prompts × {args.prompt} "
        f"tokens, {args.new} new, {args.dtype}")
  print(f"{gen:,.0f} generated tokens/s  |  {step_s * 1e3:.2f} ms per decode step  |  "
        f"{times[args.new]:.2f} s per call (prefill + {args.new} steps)")
  print(f"decode step reads {step_bytes / 1e6:,.1f} MB (weights {weight_bytes / 1e6:,.1f}, cache "
        f"{cache_bytes / 1e6:,.1f}) → {step_bytes / step_s / 1e9:,.1f} GB/s of a measured "
        f"{bandwidth / 1e9:,.1f} GB/s = {step_bytes / step_s / bandwidth:.1%} of the roofline")
  common.emit("hh_generate", gen_tokens_per_s=gen, ms_per_decode_step=step_s * 1e3,
              roofline_fraction=step_bytes / step_s / bandwidth,
              memory_gbytes_per_s=bandwidth / 1e9, peak_matmul_gflops=peak / 1e9,
              batch=args.batch)


if __name__ == "__main__":
  main()
