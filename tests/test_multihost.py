"""2 processes × 4 CPU devices (jax.distributed, gloo) == 1 process × 8 devices."""
import os
import subprocess
import sys

import portpicker
import pytest

from conftest import FAST_COMPILE, REPO
from hh.train import metrics as metrics_lib

ARGS = ["--config=configs/lm.py:size=small", "--config.lm.data.seq_len=32",
        "--config.lm.data.batch_size=8", "--config.lm.loop.steps=4", "--config.lm.loop.log_every=1",
        "--config.lm.loop.eval_every=4", "--config.lm.data.eval_batches=2",
        "--config.lm.loop.ckpt_every=2", "--config.progress=False",
        "--config.mesh.fsdp=4", "--config.mesh.tensor=2"]


def _launch(workdir, tokenizer, n_processes, devices_each):
  port = portpicker.pick_unused_port()
  procs = []
  for pid in range(n_processes):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each} {FAST_COMPILE}")
    if n_processes > 1:
      env.update(HH_COORDINATOR=f"localhost:{port}", HH_NUM_PROCESSES=str(n_processes),
                 HH_PROCESS_ID=str(pid))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "hh.main", *ARGS, f"--config.tokenizer.path={tokenizer}",
         f"--workdir={workdir}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  for p in procs:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  return metrics_lib.read(str(workdir))


def test_two_processes_match_one(tmp_path, wikitext_tokenizer):
  single = _launch(tmp_path / "single", wikitext_tokenizer.path, 1, 8)
  multi = _launch(tmp_path / "multi", wikitext_tokenizer.path, 2, 4)
  assert [r["step"] for r in multi] == [r["step"] for r in single]
  for a, b in zip(single, multi):
    assert a["split"] == b["split"]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
  # both processes wrote their shards into one checkpoint (step 4 exists and is complete)
  assert (tmp_path / "multi" / "checkpoints" / "4").is_dir()
