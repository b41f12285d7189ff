"""PM-pair throughput of the whole data pipeline vs what the 13M PM train step consumes.

  python benchmarks/data.py

Pipeline: hh_rlhf/harmless-base (the shipped 1,900 test rows) from TFDS array_record → grain
(shuffle, process shard) → tokenise context + response + EOC with left truncation → batch of 8
pairs × 512 tokens, on this process (2 cores). Step: the 13M-shape PM (4 layers, d 512, 8 heads,
d_ff 2048, vocab 32,000), 8 pairs = 16 sequences × 512 tokens, fp32, AdamW.
"""
from __future__ import annotations

import os
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from configs import lm  # noqa: E402
from configs.common import SHARED_DATA  # noqa: E402
from hh import sharding, tokenizer  # noqa: E402
from hh.data import pipeline, tfds_io  # noqa: E402
from hh.models import ModelConfig, PreferenceModel  # noqa: E402
from hh.pm import step as pm_step  # noqa: E402
from hh.train import state as state_lib  # noqa: E402

PAIRS, SEQ = 8, 512


def pipeline_pairs_per_sec(workdir: str) -> tuple[float, tokenizer.Tokenizer]:
  builder = tfds_io.build("hh_rlhf/harmless-base", workdir,
                          source_dir=str(SHARED_DATA / "hh-rlhf"))
  src = tfds_io.source(builder, "test")
  lines = [x for i in range(len(src))
           for x in tfds_io.text(src[i]["chosen_transcript"]).split("\n")]
  tok = tokenizer.train(lines, 4096, os.path.join(workdir, "tok.model"))
  loader = pipeline.make_loader(src, [pipeline.PairTokenizer(tok, SEQ)], PAIRS, seed=0,
                                num_epochs=3)
  t0, pairs = time.perf_counter(), 0
  for batch in loader:
    pairs += len(batch["index"])
    pipeline.pm_pair_batch(batch)
  return pairs / (time.perf_counter() - t0), tok


def pm_step_pairs_per_sec() -> float:
  config = lm.get_config("size=13M")
  config.model.dtype, config.model.remat_policy = "float32", "none"
  model = PreferenceModel(ModelConfig.from_config(config.model, 32_000))
  tx = state_lib.make_optimizer(config.optim, 1000)
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  rng = np.random.default_rng(0)
  batch = {"tokens": rng.integers(5, 32_000, (2 * PAIRS, SEQ)).astype(np.int32),
           "mask": np.ones((2 * PAIRS, SEQ), np.int32),
           "eoc": np.full(2 * PAIRS, SEQ - 1, np.int32), "weight": np.ones(PAIRS, np.float32)}
  with jax.set_mesh(mesh):
    example = (jnp.zeros((1, SEQ), jnp.int32),) * 2 + (jnp.zeros((1,), jnp.int32),)
    init = state_lib.init_fn(model, tx, example, 0)
    _, shardings, _ = state_lib.abstract_state(init, mesh, rules)
    holder = {"state": state_lib.create_state(init, shardings)}
    step = jax.jit(pm_step.make_pm_train_step(model, tx, rules), donate_argnums=0)
    batch = sharding.global_batch(batch, mesh)

    def run(b):
      holder["state"], m = step(holder["state"], b)
      return m

    seconds = common.time_fn(run, batch, warmup=2, iters=3)
  return PAIRS / seconds


def main():
  with tempfile.TemporaryDirectory() as workdir:
    pipe, _ = pipeline_pairs_per_sec(workdir)
  step = pm_step_pairs_per_sec()
  print(f"data pipeline: {pipe:,.0f} PM pairs/s ({PAIRS} pairs × {SEQ} tokens per batch, "
        f"1 process, {os.cpu_count()} cores)")
  print(f"13M PM train step consumes: {step:,.2f} pairs/s ({2 * SEQ * step:,.0f} tokens/s)")
  print(f"pipeline / step = {pipe / step:,.0f}×")


if __name__ == "__main__":
  main()
