"""Two jax.distributed processes read disjoint shards whose union is the whole epoch."""
import json
import os
import subprocess
import sys

import portpicker

from conftest import DATA, HH_RLHF, REPO
from hh.data import tfds_io

WORKER = """
import json, os, sys
from hh import multihost
multihost.maybe_initialize()
import jax
from hh import tokenizer
from hh.data import pipeline, tfds_io
b = tfds_io.build("hh_rlhf/harmless-base", sys.argv[1], source_dir=sys.argv[2])
tok = tokenizer.Tokenizer.load(sys.argv[3])
loader = pipeline.make_loader(tfds_io.source(b, "test"), [pipeline.PairTokenizer(tok, 64)],
                              batch_size=10, seed=0, num_epochs=1)
seen = [int(i) for batch in loader for i in batch["index"]]
print(json.dumps({"process": jax.process_index(), "count": jax.process_count(), "seen": seen}))
"""


def test_two_processes_see_disjoint_shards_covering_the_epoch(tmp_path, wikitext_tokenizer):
  hh = HH_RLHF
  tfds_io.build("hh_rlhf/harmless-base", str(tmp_path), source_dir=str(hh))  # built once
  port = portpicker.pick_unused_port()
  procs = [subprocess.Popen(
      [sys.executable, "-c", WORKER, str(tmp_path), str(hh), wikitext_tokenizer.path],
      cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
      env=dict(os.environ, JAX_PLATFORMS="cpu", HH_COORDINATOR=f"localhost:{port}",
               HH_NUM_PROCESSES="2", HH_PROCESS_ID=str(pid),
               XLA_FLAGS="--xla_force_host_platform_device_count=1")) for pid in range(2)]
  results = []
  for p in procs:
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-2000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  a, b = (set(r["seen"]) for r in sorted(results, key=lambda r: r["process"]))
  assert all(r["count"] == 2 for r in results)
  assert len(a) == len(results[0]["seen"]) == DATA.test_rows // 2  # no repeats inside a shard
  assert not a & b and a | b == set(range(DATA.test_rows))
