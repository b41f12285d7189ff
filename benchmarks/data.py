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

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import pm_step as pm_step_bench  # noqa: E402
from configs.common import DATA_DIR  # noqa: E402
from hh import tokenizer  # noqa: E402
from hh.data import pipeline, tfds_io  # noqa: E402

PAIRS, SEQ = 8, 512


def pipeline_pairs_per_sec(workdir: str) -> tuple[float, tokenizer.Tokenizer]:
  if DATA_DIR is None:
    sys.exit("benchmarks/data.py: set HH_DATA_DIR to a folder holding hh-rlhf/ (official layout)")
  builder = tfds_io.build("hh_rlhf/harmless-base", workdir, source_dir=str(DATA_DIR / "hh-rlhf"))
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
  return pm_step_bench.measure(pairs=PAIRS, seq=SEQ)["pairs_per_sec"]


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
