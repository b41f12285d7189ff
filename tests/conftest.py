"""Test set-up: 8 simulated CPU devices for every test (2 for whole-pipeline subprocesses), shared
data paths, a small tokenizer."""
import os
import pathlib
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Tests are dominated by XLA compile time (hundreds of small programs, each run a few times):
# LLVM's optimisation level 0 compiles them in about 60% of the time (test_model + test_ppo:
# 281 → 169 s), and a compilation cache shared by the session's tests and subprocesses compiles
# a program that several tests build only once (169 → 148 s). Whole pipelines, which run their
# programs for minutes, run in subprocesses at XLA's default level (``pipeline_env``); runs and
# benchmarks are untouched. Numerics are checked against float64 references with stated
# tolerances, and bit-identity only within one setting.
FAST_COMPILE = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           f" --xla_force_host_platform_device_count=8 {FAST_COMPILE}").strip()
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", tempfile.mkdtemp(prefix="hh-test-jax-cache-"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")


def pipeline_env(devices: int = 2) -> dict[str, str]:
  """The environment for a subprocess that runs a whole pipeline: XLA's default optimisation,
  ``devices`` simulated devices. Two keep the runs sharded (a data axis of 2: sharded
  checkpoints saved and restored) at two thirds of the time eight take on 2 cores (the small
  pipeline 48 vs 71 s, its online loop 74 vs 118 s, warm compilation cache); the in-process
  tests keep eight, and restore these runs' checkpoints onto them."""
  flags = os.environ["XLA_FLAGS"].replace(FAST_COMPILE, "").replace(
      "--xla_force_host_platform_device_count=8", f"--xla_force_host_platform_device_count={devices}")
  return dict(os.environ, XLA_FLAGS=flags.strip())

import jax  # noqa: E402  (after the flags above)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

import hh_data  # noqa: E402

# The tests' data (tests/hh_data.py): real files when HH_DATA_DIR is set, else generated ones; the
# configs (and every subprocess) read it through HH_DATA_DIR.
DATA = hh_data.facts()
os.environ["HH_DATA_DIR"] = str(DATA.root)
REPO = pathlib.Path(__file__).resolve().parents[1]
WIKITEXT, HH_RLHF = DATA.wikitext, DATA.hh_rlhf


def pytest_sessionfinish(session, exitstatus):
  if hasattr(session.config, "workerinput"):
    return  # an xdist worker: the controller removes the shared cache when all are done
  cache = os.environ.get("JAX_COMPILATION_CACHE_DIR", "")
  if os.path.basename(cache).startswith("hh-test-jax-cache-"):
    import shutil
    shutil.rmtree(cache, ignore_errors=True)


# The files whose module fixtures run whole pipelines in subprocesses, slowest first: collected
# first, so that the two xdist workers start on them and the other files fill in behind (handed
# out in collection order, --no-loadscope-reorder). Otherwise the longest file could start last
# and run alone at the end.
SLOWEST = ("test_kill.py", "test_world_pm.py")


def pytest_collection_modifyitems(config, items):
  rank = {name: k for k, name in enumerate(SLOWEST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(SLOWEST)))  # stable: the rest in order


@pytest.fixture(scope="session")
def wikitext_tokenizer(tmp_path_factory):
  """A 512-piece tokenizer trained on WikiText-2 validation text (shared by the tests)."""
  from hh import tokenizer
  lines = (WIKITEXT / "valid.txt").read_text(encoding="utf-8").splitlines()
  return tokenizer.train(lines, 512, str(tmp_path_factory.mktemp("tok") / "tok.model"))


def tiny_lm_config(workdir_tokenizer: str, **loop):
  """configs/lm.py:size=tiny shrunk for tests: short sequences, few steps, no progress bar."""
  from configs import lm
  config = lm.get_config("size=tiny")
  config.tokenizer.path = workdir_tokenizer
  config.lm.data.update(dict(seq_len=32, batch_size=8, eval_batches=2))
  config.progress = False
  config.lm.loop.update(dict(steps=6, log_every=1, eval_every=3, ckpt_every=3))
  config.lm.loop.update(loop)
  return config
