"""The catalogue of bad inputs (docs/robustness.md): each case runs the real entry point under
the CLI's error handling and must end as one line that names the file, line or key and says what
is allowed — never a traceback, never partial output.

``python tests/test_bad_inputs.py`` prints docs/robustness.md's table from the messages the cases give.
"""
import dataclasses
import gzip
import json
import os
import re
import sys
from collections.abc import Callable

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from conftest import REPO  # noqa: E402

GOOD = json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: hello",
                   "rejected": "\n\nHuman: hi\n\nAssistant: go away"})


@dataclasses.dataclass(frozen=True)
class Case:
  group: str
  given: str                       # the table's "input" column
  run: Callable[[str], object]     # (a fresh temporary folder) → raises
  expect: str                      # regex the one-line message must match
  prog: str = "hh"


def _gz(folder, name, lines, raw: bytes | None = None):
  path = os.path.join(folder, "src", "harmless-base", name)
  os.makedirs(os.path.dirname(path), exist_ok=True)
  data = raw if raw is not None else b"".join(
      ln if isinstance(ln, bytes) else (ln + "\n").encode() for ln in lines)
  with open(path, "wb") as f:
    f.write(gzip.compress(data) if raw is None or name.endswith(".gz") else data)
  return path


def _build(folder):
  from hh.data import tfds_io
  return tfds_io.build("hh_rlhf/harmless-base", os.path.join(folder, "data"),
                       source_dir=os.path.join(folder, "src"))


def _hh(lines):
  def run(folder):
    _gz(folder, "test.jsonl.gz", lines)
    _build(folder)
  return run


def _truncated_gzip(folder):
  path = _gz(folder, "test.jsonl.gz", [GOOD] * 50)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])                      # a download cut short
  _build(folder)


def _not_gzip(folder):
  path = os.path.join(folder, "src", "harmless-base", "test.jsonl.gz")
  os.makedirs(os.path.dirname(path))
  with open(path, "w") as f:
    f.write(GOOD + "\n")                                 # plain text under a .gz name
  _build(folder)


def _jsonl(folder, text: str | bytes, name="in.jsonl"):
  path = os.path.join(folder, name)
  with open(path, "wb") as f:
    f.write(text if isinstance(text, bytes) else text.encode())
  return path


def _score(text):
  def run(folder):
    from hh import io
    io.read_jsonl(_jsonl(folder, text), {"context": str, "response": str})
  return run


def _stackexchange(row):
  def run(folder):
    from hh.data import pmp
    list(pmp.stackexchange_pairs(_jsonl(folder, json.dumps(row) + "\n", "se.jsonl"), 10))
  return run


def _inspect_small(folder):
  from hh.data import inspect
  inspect._tokenizer(None, [{"chosen_transcript": "Human: hi Assistant: hello"}] * 5, folder, 2000)


def _config(module: str, overrides: dict, size="tiny"):
  """``hh.main``'s run on ``configs/<module>.py`` with ``overrides`` (dotted keys)."""
  def run(folder):
    import importlib

    from hh import main as hh_main
    config = importlib.import_module(f"configs.{module}").get_config(f"size={size}")
    for key, value in overrides.items():
      *path, last = key.split(".")
      node = config
      for p in path:
        node = node[p]
      node[last] = value
    hh_main.run(config, os.path.join(folder, "run"))
  return run


def _cli(*args, module="hh.main"):
  def run(folder):
    import subprocess
    proc = subprocess.run([sys.executable, "-m", module, *args,
                           f"--workdir={os.path.join(folder, 'run')}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != "HH_TRACEBACK"})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("W")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-800:]
    raise SystemExit(lines[-1])
  return run


def _response_cap(folder):
  from configs import pipeline
  from configs import ppo as ppo_cfg
  from hh import main as hh_main
  config = pipeline.get_config("size=tiny")
  config.ppo = ppo_cfg.stage("tiny")
  config.pm.finetune.seq_len = 32
  hh_main.run(config, os.path.join(folder, "run"))


def _pi0_of_another_size(folder):
  """π0's workdir made at micro, the PPO config at tiny."""
  from configs import pipeline
  from hh import workdir as workdir_lib
  workdir_lib.write_config(pipeline.get_config("size=micro"), os.path.join(folder, "pi0"))
  _config("ppo", {"ppo.init_from": os.path.join(folder, "pi0")})(folder)


def _other_config(folder):
  from configs import lm
  from hh import main as hh_main
  from hh import stages
  config = lm.get_config("size=tiny")
  stages.check_identity("lm", config, os.path.join(folder, "run"))
  config.lm.optim.lr = 1e-3
  hh_main.run(config, os.path.join(folder, "run"))


def _locked(folder):
  import subprocess

  from configs import lm
  from hh import main as hh_main
  code = ("import sys, time; from hh import io\nwith io.workdir_lock(sys.argv[1]):\n"
          "  print('held', flush=True); time.sleep(600)\n")
  proc = subprocess.Popen([sys.executable, "-c", code, os.path.join(folder, "run")], cwd=REPO,
                          stdout=subprocess.PIPE, text=True)
  try:
    assert proc.stdout.readline().strip() == "held"
    hh_main.run(lm.get_config("size=tiny"), os.path.join(folder, "run"))
  finally:
    proc.kill()
    proc.wait()


def _init_from_missing(folder):
  _config("lm", {"lm.init_from": os.path.join(folder, "nowhere"), "tokenizer.vocab_size": 512})(
      folder)


def _ood_layer(folder):
  from hh.ood import detector
  detector.resolve_layer("9", 2)


def _non_finite(folder):
  """A loss that turns NaN at step 4 of 6 (checkpoints every 2): the run stops there."""
  import jax.numpy as jnp
  from flax import struct

  from hh.train import checkpoint, loop
  from hh.train import metrics as metrics_lib

  @struct.dataclass
  class State:
    step: jnp.ndarray

  def step(state, batch):
    s = state.step + 1
    return State(s), {"loss_sum": jnp.where(s >= 4, jnp.nan, 1.0), "loss_count": jnp.float32(1)}

  mngr = checkpoint.manager(folder, 3, 2)
  loop.fit(state=State(jnp.zeros((), jnp.int32)), train_step=step, batches=lambda s: None,
           data_state=lambda: {}, evaluate=lambda s: {}, mngr=mngr,
           settings=loop.Settings(steps=6, log_every=1, eval_every=100, ckpt_every=2,
                                  progress=False),
           writer=metrics_lib.Writer(folder), tokens_per_step=1)


CASES = [
    # --- data files
    Case("data", "hh-rlhf `.jsonl.gz` cut short (truncated gzip stream)", _truncated_gzip,
         r"test\.jsonl\.gz: bad_gzip: not a complete gzip stream .*fetch the file again"),
    Case("data", "hh-rlhf `.jsonl.gz` that is not gzip", _not_gzip,
         r"test\.jsonl\.gz: bad_gzip: not a complete gzip stream"),
    Case("data", "hh-rlhf row cut mid-JSON", _hh([GOOD, '{"chosen": "\\n\\nHuman: a', GOOD]),
         r"test\.jsonl\.gz:2: not_json: truncated or invalid JSON"),
    Case("data", "hh-rlhf row with a non-UTF-8 byte",
         _hh([GOOD, b'{"chosen": "caf\xe9", "rejected": "b"}\n']),
         r"test\.jsonl\.gz:2: non_utf8: byte \d+ is not UTF-8"),
    Case("data", "hh-rlhf row without `rejected`",
         _hh([json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b"})]),
         r"test\.jsonl\.gz:1: missing_key:"),
    Case("data", "hh-rlhf row whose `chosen` is a number",
         _hh([json.dumps({"chosen": 3, "rejected": "\n\nHuman: a\n\nAssistant: b"})]),
         r"test\.jsonl\.gz:1: missing_key: .*string"),
    Case("data", "hh-rlhf transcript without an Assistant turn",
         _hh([json.dumps({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: yo"})]),
         r"test\.jsonl\.gz:1: no_assistant_turn:"),
    Case("data", "hh-rlhf folder without the official layout",
         lambda folder: (os.makedirs(os.path.join(folder, "src")), _build(folder)),
         r"expected the official hh-rlhf layout"),
    Case("data", "StackExchange PMP answer without a score",
         _stackexchange({"question": "q", "answers": [{"text": "a"}, {"text": "b", "score": 1}]}),
         r"se\.jsonl:1: missing_key: each answer needs 'score' or 'pm_score"),
    Case("data", "StackExchange PMP score that is not a number",
         _stackexchange({"question": "q", "answers": [{"text": "a", "score": "ten"},
                                                      {"text": "b", "score": 1}]}),
         r"se\.jsonl:1: wrong_type: an answer's score 'ten' is not a number"),
    Case("data", "StackExchange PMP row without `answers`", _stackexchange({"question": "q"}),
         r"se\.jsonl:1: missing_key: expected 'question' \(str\) and 'answers' \(list\)"),
    Case("data", "scorer JSONL row without `response`",
         _score('{"context": "a", "response": "b"}\n{"context": "a"}\n'),
         r"in\.jsonl:2: expected key 'response' of type str"),
    Case("data", "scorer JSONL row with a number for `context`",
         _score('{"context": 1, "response": "b"}\n'),
         r"in\.jsonl:1: expected key 'context' of type str"),
    Case("data", "scorer JSONL line that is not JSON", _score('{"context": "a", "resp\n'),
         r"in\.jsonl:1: not a JSON object"),
    Case("data", "scorer JSONL with a non-UTF-8 byte",
         _score(b'{"context": "a", "response": "b"}\n{"context": "caf\xe9"}\n'),
         r"in\.jsonl:2: not UTF-8 text"),
    Case("data", "empty scorer / OOD prompt JSONL", _score("\n\n"),
         r"in\.jsonl: no rows \(an empty file\)"),
    Case("data", "text too small for the tokenizer's vocabulary (`hh.data.inspect`)",
         _inspect_small, r"--vocab_size=2000: the text is too small .* allowed for this text: "
         r"≤ \d+"),
    # --- configs
    Case("config", "unknown key `--config.lm.optim.lrr=1`",
         _cli("--config=configs/lm.py", "--config.lm.optim.lrr=1"),
         r"unknown config key --config\.lm\.optim\.lrr"),
    Case("config", "unknown inner key `--config.data.batch_size=2` beside a valid override",
         _cli("--config=configs/lm.py", "--config.mesh.fsdp=1", "--config.data.batch_size=2"),
         r"unknown config key --config\.data\.batch_size"),
    Case("config", "wrong type `--config.lm.optim.lr=fast`",
         _cli("--config=configs/lm.py", "--config.lm.optim.lr=fast"),
         r"--config\.lm\.optim\.lr=fast"),
    Case("config", "unknown size `configs/lm.py:size=huge`", _cli("--config=configs/lm.py:size=huge"),
         r"unknown model size 'huge'; allowed: nano, micro"),
    Case("config", "negative learning rate", _config("lm", {"lm.optim.lr": -1e-3}),
         r"config\.lm\.optim\.lr=-0\.001: allowed ≥ 0"),
    Case("config", "negative KL coefficient λ_KL", _config("ppo", {"ppo.kl_coef": -0.1}),
         r"config\.ppo\.kl_coef=-0\.1: allowed ≥ 0"),
    Case("config", "PPO clip ε = 0", _config("ppo", {"ppo.clip_eps": 0.0}),
         r"config\.ppo\.clip_eps=0\.0: allowed > 0"),
    Case("config", "PPO epochs K = 0", _config("ppo", {"ppo.epochs": 0}),
         r"config\.ppo\.epochs=0: allowed ≥ 1"),
    Case("config", "PPO minibatches that do not divide the rollout batch",
         _config("ppo", {"ppo.minibatches": 3}),
         r"config\.ppo\.minibatches=3 does not divide config\.ppo\.rollout_batch=64"),
    Case("config", "sampler calls that do not divide the PPO rollout",
         _config("ppo", {"sampling.batch_size": 24}),
         r"config\.sampling\.batch_size=24 does not divide config\.ppo\.rollout_batch=64"),
    Case("config", "a batch that does not split over the mesh's batch axes (8 devices)",
         _config("lm", {"lm.data.batch_size": 12}),
         r"config\.lm\.data\.batch_size=12 does not split over the mesh's batch axes \(data × "
         r"fsdp = 8 on 8 devices\); allowed: a multiple of 8"),
    Case("config", "a response cap longer than the PM's context", _response_cap,
         r"config\.ppo\.max_new_tokens=48 is not shorter than the PM's context "
         r"config\.pm\.finetune\.seq_len=32; allowed: < 32"),
    Case("config", "a π0 workdir of another size than the PPO config", _pi0_of_another_size,
         r"config\.ppo\.init_from='.*pi0' is another model \(n_layer=1 there, 2 here, "
         r"d_model=64 there, 192 here, n_head=1 there, 3 here\); allowed: a model of the "
         r"config's size"),
    Case("config", "top-p = 0", _config("policy", {"sampling.top_p": 0.0}),
         r"config\.sampling\.top_p=0\.0: allowed in \(0, 1\]"),
    Case("config", "a negative cache block", _config("policy", {"sampling.cache_block": -8}),
         r"config\.sampling\.cache_block=-8: allowed ≥ 0"),
    Case("config", "a mesh that does not cover the devices (`mesh.data=3`)",
         _config("lm", {"mesh.data": 3}), r"config\.mesh \(data=3 × fsdp=-1 × tensor=1\) does "
         r"not divide the 8 devices"),
    Case("config", "OOD layer outside the model (`--layer=9` of 2)", _ood_layer,
         r"--layer=9: this LM has layers 0 … 2"),
    # --- workdirs and checkpoints
    Case("workdir", "a workdir made by another config", _other_config,
         r"holds a lm stage made with another config \(differs in lm\.optim\.lr\)"),
    Case("workdir", "a second process on a running job's workdir", _locked,
         r"in use by another hh process \(pid \d+ on .*\); wait for it to finish"),
    Case("workdir", "`init_from` a workdir without checkpoints", _init_from_missing,
         r"config\.init_from='.*nowhere': no checkpoints/ folder there"),
    Case("workdir", "`pm.pmp_from` while `pm.pmp.datasets` is set",
         _config("pm", {"pm.pmp_from": "/nowhere/pmp"}),
         r"config\.pm\.pmp_from='/nowhere/pmp' starts finetuning from a finished PMP phase: "
         r"config\.pm\.pmp\.datasets must then be empty"),
    Case("workdir", "`pm.pmp_from` a folder without checkpoints",
         _config("pm", {"pm.pmp_from": "/nowhere/pmp", "pm.pmp.datasets": ()}),
         r"config\.pm\.pmp_from='/nowhere/pmp': no checkpoints/ there"),
    # --- numerics
    Case("numerics", "a loss that turns NaN (step 4 of 6, checkpoints every 2)", _non_finite,
         r"non-finite loss=nan by step 4; the run stopped there, the last good checkpoint "
         r"\(step 2\) is kept"),
]


def one_line(case: Case, folder: str) -> str:
  from hh import cli
  with pytest.raises(SystemExit) as e:
    with cli.user_errors(case.prog):
      case.run(folder)
  msg = str(e.value.code)
  assert "\n" not in msg and "Traceback" not in msg, msg
  return msg


@pytest.mark.parametrize("case", CASES, ids=lambda c: re.sub(r"\W+", "_", c.given)[:60])
def test_bad_input_gives_one_line_naming_it(case, tmp_path, monkeypatch):
  monkeypatch.delenv("HH_TRACEBACK", raising=False)
  msg = one_line(case, str(tmp_path))
  assert re.search(case.expect, msg), msg
  run_dir = tmp_path / "run"
  if case.group == "config" and run_dir.exists():  # refused before any output
    assert not [p for p in run_dir.rglob("*") if p.is_file() and p.name != ".hh.lock"]


def test_every_case_is_in_the_readme_table():
  readme = (REPO / "docs" / "robustness.md").read_text()
  missing = [c.given for c in CASES if f"| {c.given} |" not in readme]
  assert not missing, missing
  assert len(CASES) >= 30


if __name__ == "__main__":  # docs/robustness.md's table, from the messages the cases give now
  import tempfile

  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  print("| kind | input | the one line it gives |\n|---|---|---|")
  for case in CASES:
    with tempfile.TemporaryDirectory() as d:
      try:
        msg = one_line(case, d)
      except BaseException as e:  # noqa: BLE001
        msg = f"(no one-line error: {type(e).__name__} {e})"
    msg = re.sub(r"/tmp/\S*?/(?=[\w.]+\b)", "…/", msg).replace("|", "\\|")
    print(f"| {case.group} | {case.given} | `{msg}` |")


@pytest.fixture(scope="module")
def lm_runs(tmp_path_factory, wikitext_tokenizer):
  """An LM run of 6 steps (checkpoints at 3 and 6) and its tokenizer."""
  from conftest import tiny_lm_config
  from hh import main as hh_main
  root = tmp_path_factory.mktemp("ckpt")
  hh_main.run(tiny_lm_config(wikitext_tokenizer.path, ckpt_every=3), str(root / "straight"))
  return root, wikitext_tokenizer.path


def _params(workdir):
  import jax

  from hh.policy import policy as policy_lib
  return jax.tree.leaves(jax.device_get(policy_lib.load(workdir).params))


def _corrupt(step_dir):
  for path in step_dir.rglob("*"):
    if path.is_file() and "state" in path.parts:
      path.write_bytes(path.read_bytes()[:7])


def test_a_corrupted_latest_checkpoint_is_named_and_the_previous_one_used(lm_runs, capfd):
  """Killed while step 6's files were half-written: the rerun names step 6, moves it aside,
  resumes from step 3 and ends with the uninterrupted run's parameters."""
  import numpy as np

  from conftest import tiny_lm_config
  from hh import main as hh_main
  root, tok = lm_runs
  config = tiny_lm_config(tok, ckpt_every=3)
  hh_main.run(config, str(root / "broken"))
  _corrupt(root / "broken" / "checkpoints" / "6")
  hh_main.run(config, str(root / "broken"))
  err = capfd.readouterr().err
  assert re.search(r"checkpoint step 6 in .*broken/checkpoints is unreadable .*trying the "
                   r"previous one", err), err[-600:]
  assert (root / "broken" / "corrupt_checkpoints").exists()
  for a, b in zip(_params(str(root / "straight")), _params(str(root / "broken")), strict=True):
    np.testing.assert_array_equal(a, b)


def test_no_readable_checkpoint_and_init_from_another_size_are_one_line(lm_runs, tmp_path):
  from configs import lm
  from conftest import tiny_lm_config
  from hh import main as hh_main
  root, tok = lm_runs
  config = tiny_lm_config(tok, ckpt_every=3, stop_at=3)
  hh_main.run(config, str(tmp_path / "one"))
  _corrupt(tmp_path / "one" / "checkpoints" / "3")
  config.lm.loop.stop_at = None
  msg = one_line(Case("workdir", "", lambda d: hh_main.run(config, str(tmp_path / "one")), ""), "")
  assert re.search(r"one/checkpoints: no readable checkpoint \(step 3 \(.*\)\); restore one or "
                   r"use a new workdir", msg), msg
  other = lm.get_config("size=nano")
  other.tokenizer.path = tok
  other.lm.data.update(dict(seq_len=32, batch_size=8, eval_batches=2))
  other.progress = False
  other.lm.init_from = str(root / "straight")
  msg = one_line(Case("workdir", "", lambda d: hh_main.run(other, str(tmp_path / "n")), ""), "")
  assert re.search(r"config\.lm\.init_from='.*straight' is another model \(n_layer=2 there, 1 "
                   r"here, d_model=192 there, 32 here", msg), msg


def test_a_truncated_gzip_is_refused_even_when_skipping_bad_rows(tmp_path):
  from hh.data import hh_rlhf, tfds_io
  path = _gz(str(tmp_path), "test.jsonl.gz", [GOOD] * 50)
  with open(path, "rb") as f:
    data = f.read()
  with open(path, "wb") as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(hh_rlhf.BadInput, match="bad_gzip"):
    tfds_io.build("hh_rlhf/harmless-base", str(tmp_path / "data"),
                  source_dir=str(tmp_path / "src"), skip_bad=True)
