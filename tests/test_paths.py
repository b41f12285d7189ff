"""One path layer (hh/io.py) for local paths and object storage: the same operations, whole-or-
absent writes and the workdir lock on a local filesystem and on an emulated Cloud Storage
(tests/gcs_emulator.py, served in memory), and an LM stage whose gs:// workdir ends as a local
one does, bit for bit."""
import os
import subprocess
import sys
import time
import uuid

import gcs_emulator
import numpy as np
import portpicker
import pytest

from conftest import REPO, pipeline_env
from hh import io


@pytest.fixture(scope="module")
def gcs():
  """gs://hh-test served by an in-memory emulator; yields the variables that point at it."""
  port = portpicker.pick_unused_port()
  server = gcs_emulator.serve(port)
  env = gcs_emulator.env(port)
  saved = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield env
  for k, v in saved.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v
  server.stop()


@pytest.fixture(params=["local", "gs"])
def root(request, tmp_path):
  if request.param == "local":
    return str(tmp_path)
  request.getfixturevalue("gcs")
  return f"gs://{gcs_emulator.BUCKET}/{uuid.uuid4().hex}"


def test_the_same_operations_on_a_local_filesystem_and_on_object_storage(root):
  d = os.path.join(root, "run")
  assert not io.exists(d)
  io.makedirs(os.path.join(d, "sub"))
  io.write_json(os.path.join(d, "a.json"), {"n": [1, 4, 16]})
  io.write_bytes(os.path.join(d, "sub", "b.bin"), bytes(range(256)))
  assert io.read_json(os.path.join(d, "a.json")) == {"n": [1, 4, 16]}
  assert io.read_bytes(os.path.join(d, "sub", "b.bin")) == bytes(range(256))
  assert io.isfile(os.path.join(d, "a.json")) and not io.isdir(os.path.join(d, "a.json"))
  assert io.isdir(os.path.join(d, "sub")) and io.listdir(d) == ["a.json", "sub"]
  io.append_text(os.path.join(d, "log.jsonl"), '{"step": 1}\n')
  io.append_text(os.path.join(d, "log.jsonl"), '{"step": 2}\n\n{"x": 1}\n')
  with pytest.raises(ValueError, match=rf"^{d}/log\.jsonl:4: expected key 'step' of type int$"):
    io.read_jsonl(os.path.join(d, "log.jsonl"), {"step": int})
  x = np.arange(12, dtype=np.float32).reshape(3, 4)
  io.write_npz(os.path.join(d, "x.npz"), x=x)
  np.testing.assert_array_equal(io.read_npz(os.path.join(d, "x.npz"))["x"], x)
  io.rename(os.path.join(d, "a.json"), os.path.join(d, "c.json"))
  assert io.listdir(d) == ["c.json", "log.jsonl", "sub", "x.npz"]
  assert [os.path.relpath(f, d) for f in io.walk_files(d)] == [
      "c.json", "log.jsonl", "sub/b.bin", "x.npz"]
  with io.open(os.path.join(d, "c.json")) as f:
    assert f.read() == '{\n "n": [\n  1,\n  4,\n  16\n ]\n}\n'
  io.rmtree(d)
  assert not io.exists(d)


def test_datasets_of_a_bucket_workdir_are_built_in_a_local_cache(monkeypatch, tmp_path):
  """array_record files are local only: a bucket workdir's tfds/ maps to $HH_CACHE."""
  monkeypatch.setenv("HH_CACHE", str(tmp_path))
  assert io.local_dir("gs://b/runs/x/", "tfds") == str(tmp_path / "gs" / "b" / "runs" / "x" / "tfds")
  assert io.local_dir("runs/x", "tfds") == "runs/x/tfds"


def test_a_workdir_with_only_bookkeeping_is_removed_and_one_with_output_kept(root):
  d = os.path.join(root, "w")
  io.write_text(os.path.join(d, "config.json"), "{}")
  io.write_text(os.path.join(d, "lm.identity.json"), "{}")
  io.remove_if_only_bookkeeping(d)
  assert not io.exists(d)
  io.write_text(os.path.join(d, "config.json"), "{}")
  io.write_text(os.path.join(d, "metrics.jsonl"), "")
  io.remove_if_only_bookkeeping(d)
  assert io.listdir(d) == ["config.json", "metrics.jsonl"]


def test_the_object_store_lock_refuses_while_its_holder_beats_and_takes_over_a_dead_one(
    gcs, capsys):
  """No flock on object storage: the lock object names its holder, a heartbeat keeps it fresh
  past the stale time, a holder that stops beating (killed) is taken over after it, and a
  release deletes the object."""
  d = f"gs://{gcs_emulator.BUCKET}/{uuid.uuid4().hex}"
  times = dict(heartbeat_s=0.2, stale_s=1.5, settle_s=0.05)
  lock = os.path.join(d, ".hh.lock")
  a = io._ObjectLock(d, lock, **times)
  first = io.read_json(lock)
  assert first["id"] == a._id and first["who"].startswith(f"pid {os.getpid()} on ")
  time.sleep(2.0)                                        # past the stale time: still beating
  assert io.read_json(lock)["heartbeat"] > first["heartbeat"] + 1.0
  with pytest.raises(ValueError, match=rf"^{d}: in use by another hh process \(pid \d+ on .*, "
                                       r"heartbeat \d+ s ago\); wait for it to finish"):
    io._ObjectLock(d, lock, **times)
  a._stop.set()                                          # the holder dies: no more heartbeats
  a._thread.join()
  time.sleep(2.0)
  b = io._ObjectLock(d, lock, **times)
  assert io.read_json(lock)["id"] == b._id
  assert f"hh: {d}: taking over the lock of pid" in capsys.readouterr().err
  b.release()
  assert not io.exists(lock)
  with io.workdir_lock(d, **times):                      # the context manager, re-entrant
    with io.workdir_lock(d, **times):
      assert io.exists(lock)
  assert not io.exists(lock)


def test_a_workdir_scheme_without_its_filesystem_is_one_line_naming_the_package(
    monkeypatch, tmp_path):
  import importlib.util

  from configs import lm
  from hh import main as hh_main
  find_spec = importlib.util.find_spec
  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in (
      "s3fs", "gcsfs", "tensorflow") else find_spec(name, *a))
  with pytest.raises(ValueError, match=r"^s3://bucket/run: s3:// needs the s3fs package: "
                                       r"pip install s3fs$"):
    hh_main.run(lm.get_config("size=nano"), "s3://bucket/run")
  with pytest.raises(ValueError, match=r"^gs://b/run: gs:// needs the gcsfs package: pip "
                                       r"install gcsfs \(or pip install -e '\.\[gcs\]'\)$"):
    hh_main.run(lm.get_config("size=nano"), "gs://b/run")
  with pytest.raises(ValueError, match=r"^ftp://h/run: no filesystem for ftp:// \(hh reads and "
                                       r"writes local paths and gs://, s3://, az://\)$"):
    hh_main.run(lm.get_config("size=nano"), "ftp://h/run")
  assert not os.listdir(tmp_path)


def _lm(workdir, tokenizer, env):
  args = ["--config=configs/lm.py:size=tiny", "--config.lm.data.seq_len=32",
          "--config.lm.data.batch_size=8", "--config.lm.loop.steps=4",
          "--config.lm.loop.log_every=1", "--config.lm.loop.eval_every=4",
          "--config.lm.data.eval_batches=2", "--config.lm.loop.ckpt_every=2",
          "--config.progress=False", f"--config.tokenizer.path={tokenizer}"]
  p = subprocess.run([sys.executable, "-m", "hh.main", *args, f"--workdir={workdir}"], cwd=REPO,
                     env=env, capture_output=True, text=True, timeout=600)
  assert p.returncode == 0, p.stderr[-3000:]
  return p.stdout


def test_an_lm_stage_on_a_gs_workdir_ends_as_the_local_one_bit_for_bit(
    gcs, tmp_path, wikitext_tokenizer):
  """Metrics, TensorBoard events, the stage marker and sharded orbax checkpoints written to
  gs://; the run's losses and restored params equal a local workdir's; a rerun finds the stage
  done; the lock object is gone at the end."""
  import jax

  from hh import convert
  from hh.train import metrics as metrics_lib
  env = dict(pipeline_env(), **gcs)
  remote = f"gs://{gcs_emulator.BUCKET}/{uuid.uuid4().hex}/lm"
  local = str(tmp_path / "lm")
  out = _lm(remote, wikitext_tokenizer.path, env)
  assert out == _lm(local, wikitext_tokenizer.path, env)
  def timeless(workdir):
    return [{k: v for k, v in r.items() if k not in ("time", "steps_per_sec", "tokens_per_sec")}
            for r in metrics_lib.read(workdir)]
  assert timeless(remote) == timeless(local) and len(timeless(local)) == 5
  assert io.listdir(os.path.join(remote, "checkpoints")) == ["2", "4"]
  assert io.listdir(os.path.join(remote, "tb")) and io.exists(os.path.join(remote, "stages",
                                                                           "lm.json"))
  assert not io.exists(os.path.join(remote, ".hh.lock"))
  assert _lm(remote, wikitext_tokenizer.path, env) == out  # done: the stage is not rerun
  _, a = convert.load(local)
  _, b = convert.load(remote)
  assert jax.tree.all(jax.tree.map(lambda x, y: np.array_equal(np.asarray(x), np.asarray(y)),
                                   a, b))


@pytest.mark.slow
def test_the_small_pipeline_on_a_gs_workdir_ends_as_the_local_one(gcs, tmp_path,
                                                                  wikitext_tokenizer):
  """world → LM → PM → CD → PPO → policies → report on the emulated gs:// (about 2 min) and in
  a local folder: every stage's record equal, the report written to the bucket.

    python -m pytest -m slow tests/test_paths.py
  """
  env = dict(pipeline_env(), **gcs, HH_CACHE=str(tmp_path / "cache"))
  remote = f"gs://{gcs_emulator.BUCKET}/{uuid.uuid4().hex}/small"
  for workdir in (remote, str(tmp_path / "small")):
    p = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path[:0] = ['tests']; from test_sim import small_pipeline_config; "
        "from hh import main; main.run(small_pipeline_config(sys.argv[1], all_stages=True), "
        "sys.argv[2])"), wikitext_tokenizer.path, workdir], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-3000:]
  local = str(tmp_path / "small")
  stages = io.listdir(os.path.join(local, "stages"))
  assert io.listdir(os.path.join(remote, "stages")) == stages and "policies.json" in stages

  def strip_paths(x):
    if isinstance(x, dict):
      return {k: strip_paths(v) for k, v in x.items()}
    if isinstance(x, list):
      return [strip_paths(v) for v in x]
    return x.replace(remote, "W").replace(local, "W") if isinstance(x, str) else x
  for name in stages:
    assert strip_paths(io.read_json(os.path.join(remote, "stages", name))) == strip_paths(
        io.read_json(os.path.join(local, "stages", name))), name
  assert io.isfile(os.path.join(remote, "report", "report.md"))
