"""2 processes × 4 CPU devices (jax.distributed, gloo) == 1 process × 8 devices, started through
hh's explicit variables and through SLURM's (jax.distributed.initialize() with no arguments)."""
import os
import socket
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


def _slurm_job_id() -> int:
  """A job id whose port (JAX: 61440 + id mod 4096) is free here."""
  for job in range(1, 4096):
    with socket.socket() as s:
      try:
        s.bind(("localhost", 61440 + job))
        return job
      except OSError:
        continue
  raise RuntimeError("no free port in SLURM's range")


def _launch(workdir, tokenizer, n_processes, devices_each, launcher="explicit"):
  port = portpicker.pick_unused_port()
  job = _slurm_job_id() if launcher == "slurm" else None
  procs = []
  for pid in range(n_processes):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "HH_COORDINATOR", "HH_NUM_", "HH_PROCESS"))}
    env.update(JAX_PLATFORMS="cpu",
               XLA_FLAGS=f"--xla_force_host_platform_device_count={devices_each} {FAST_COMPILE}")
    if n_processes > 1 and launcher == "explicit":
      env.update(HH_COORDINATOR=f"localhost:{port}", HH_NUM_PROCESSES=str(n_processes),
                 HH_PROCESS_ID=str(pid))
    elif n_processes > 1:  # what srun sets for each task
      env.update(SLURM_JOB_ID=str(job), SLURM_STEP_NODELIST="localhost",
                 SLURM_NTASKS=str(n_processes), SLURM_PROCID=str(pid), SLURM_LOCALID=str(pid))
    procs.append(subprocess.Popen(
        [sys.executable, "-m", "hh.main", *ARGS, f"--config.tokenizer.path={tokenizer}",
         f"--workdir={workdir}"], cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  for p in procs:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  return metrics_lib.read(str(workdir))


@pytest.fixture(scope="module")
def single(tmp_path_factory, wikitext_tokenizer):
  return _launch(tmp_path_factory.mktemp("single"), wikitext_tokenizer.path, 1, 8)


@pytest.mark.parametrize("launcher", ["explicit", "slurm"])
def test_two_processes_match_one(tmp_path, wikitext_tokenizer, single, launcher):
  multi = _launch(tmp_path / "multi", wikitext_tokenizer.path, 2, 4, launcher)
  assert [r["step"] for r in multi] == [r["step"] for r in single]
  for a, b in zip(single, multi):
    assert a["split"] == b["split"]
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-5), (a, b)
  # both processes wrote their shards into one checkpoint (step 4 exists and is complete)
  assert (tmp_path / "multi" / "checkpoints" / "4").is_dir()
