"""hh-rlhf through TFDS (no TensorFlow) and grain: counts, round trips, resume, bad input."""
import collections
import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import DATA, HH_RLHF, REPO
from hh import sharding
from hh.data import hh_rlhf, pipeline, tfds_io
from hh.tokenizer import ASSISTANT, HUMAN

HH = HH_RLHF


@pytest.fixture(scope="module")
def harmless(tmp_path_factory):
  data_dir = tmp_path_factory.mktemp("tfds")
  return tfds_io.build("hh_rlhf/harmless-base", str(data_dir), source_dir=str(HH))


def raw_rows():
  with gzip.open(HH / "harmless-base" / "test.jsonl.gz", "rt", encoding="utf-8") as f:
    return [json.loads(line) for line in f]


def test_build_gives_every_row_without_tensorflow(tmp_path):
  code = ("import sys; from hh.data import tfds_io; "
          f"b = tfds_io.build('hh_rlhf/harmless-base', {str(tmp_path)!r}, source_dir={str(HH)!r});"
          "print(len(tfds_io.source(b, 'test')), 'tensorflow' in sys.modules)")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO,
                       check=True).stdout.split()
  assert out[-2:] == [str(DATA.test_rows), "False"]


def test_inspect_turns_histogram_matches_raw_json(harmless, tmp_path):
  expected = collections.Counter(
      r["chosen"][:r["chosen"].rfind(ASSISTANT)].count(HUMAN) for r in raw_rows())
  data_dir = os.path.dirname(os.path.dirname(os.path.dirname(harmless.data_dir)))
  proc = subprocess.run(
      [sys.executable, "-m", "hh.data.inspect", "--dataset=hh_rlhf/harmless-base",
       "--split=test", f"--source_dir={HH}", f"--data_dir={data_dir}", "--vocab_size=600",
       "--examples=1"], capture_output=True, text=True, cwd=REPO, check=True)
  line = next(x for x in proc.stdout.splitlines() if x.startswith("turns histogram"))
  printed = dict(tuple(map(int, kv.split(": "))) for kv in line.split("): ")[1].split(", "))
  assert printed == dict(expected)
  assert f"{DATA.test_rows} examples" in proc.stdout and "context_realigned': 2" in proc.stdout


def test_split_rule_and_fields(harmless):
  src = tfds_io.source(harmless, "test")
  rows = raw_rows()
  for i in (DATA.plain, DATA.empty_chosen, *DATA.realigned):  # the realigned: the last two
    ex, raw = src[i], rows[i]
    ctx = tfds_io.text(ex["context_text"])
    assert ctx + ASSISTANT + tfds_io.text(ex["chosen"]) == raw["chosen"]
    assert ctx + ASSISTANT + tfds_io.text(ex["rejected"]) == raw["rejected"]
    speakers = [tfds_io.text(s) for s in ex["context"]["speaker"]]
    assert speakers[-1] == "Human" and int(ex["num_human_turns"]) == speakers.count("Human")


def test_pm_batches_detokenise_to_the_original_text(harmless, wikitext_tokenizer):
  tok = wikitext_tokenizer
  src = tfds_io.source(harmless, "test")
  loader = pipeline.make_loader(src, [pipeline.PairTokenizer(tok, 4096)], 8, seed=1)
  batch = next(iter(loader))
  for row in range(8):
    ex = src[int(batch["index"][row])]
    for side in ("chosen", "rejected"):
      ids, mask = batch[f"{side}_tokens"][row], batch[f"{side}_mask"][row]
      eoc = batch[f"{side}_eoc"][row]
      assert ids[eoc] == tok.eoc_id and mask.sum() == eoc + 1 and ids[eoc + 1:].sum() == 0
      assert tok.decode(ids[:eoc]) == tfds_io.text(ex[f"{side}_transcript"])
  # a short window keeps the whole response and the EOC, cutting the context on the left
  response = tfds_io.text(src[0]["chosen"])
  seq_len = len(tok.encode(ASSISTANT + response)) + 10  # room for 9 context tokens
  short = pipeline.PairTokenizer(tok, seq_len).map({**src[0], "_index": 0})
  full = tfds_io.text(src[0]["chosen_transcript"])
  eoc = short["chosen_eoc"]
  assert eoc == seq_len - 1 and short["chosen_tokens"][eoc] == tok.eoc_id
  assert short["chosen_truncated"] == 0
  kept = tok.decode(short["chosen_tokens"][:eoc])
  assert full.endswith(kept) and kept.endswith(tfds_io.text(src[0]["chosen"]))


def test_pm_batch_becomes_a_global_array_on_the_mesh(harmless, wikitext_tokenizer):
  import jax

  from configs import lm
  from hh import sharding
  src = tfds_io.source(harmless, "test")
  batch = next(iter(pipeline.make_loader(src, [pipeline.PairTokenizer(wikitext_tokenizer, 64)],
                                         8, seed=0)))
  stacked = pipeline.pm_pair_batch(batch)
  mesh = sharding.make_mesh(lm.get_config("size=tiny").mesh)  # fsdp over all 8 devices
  arrays = sharding.global_batch({k: stacked[k] for k in ("tokens", "mask", "eoc")}, mesh)
  assert arrays["tokens"].shape == (16, 64) and len(jax.devices()) == 8
  assert arrays["tokens"].sharding.shard_shape((16, 64)) == (2, 64)
  np.testing.assert_array_equal(np.asarray(arrays["tokens"][:8]), batch["chosen_tokens"])
  np.testing.assert_array_equal(np.asarray(arrays["eoc"][8:]), batch["rejected_eoc"])


def test_prompt_batches_end_with_the_assistant_marker(harmless, wikitext_tokenizer):
  tok = wikitext_tokenizer
  src = tfds_io.source(harmless, "test")
  loader = pipeline.make_loader(src, [pipeline.PromptTokenizer(tok, 1024)], 4, seed=0)
  batch = next(iter(loader))
  for row in range(4):
    ids, mask = batch["prompt_tokens"][row], batch["prompt_mask"][row]
    assert mask[-1] == 1 and ids[-1] == tok.assistant_id  # left-padded, marker last
    ctx = tfds_io.text(src[int(batch["index"][row])]["context_text"])
    assert tok.decode(ids[mask == 1]) == ctx + ASSISTANT


def test_lm_windows_shift_by_one_and_carry_their_dataset_weight():
  windows = np.arange(40, dtype=np.int32).reshape(4, 10)
  weights = np.array([1.0, 1.0, 0.5, 0.5], np.float32)
  ex = pipeline.LMWindow().map({**pipeline.WindowSource(windows, weights)[2], "_index": 2})
  np.testing.assert_array_equal(ex["inputs"], windows[2, :-1])
  np.testing.assert_array_equal(ex["targets"], windows[2, 1:])
  np.testing.assert_array_equal(ex["weights"], np.full(9, 0.5, np.float32))
  # every process reads the same global batch and keeps its own rows
  batch = next(iter(pipeline.make_loader(pipeline.WindowSource(windows, weights),
                                         [pipeline.LMWindow()], 4, seed=0, num_epochs=1,
                                         by_process=False)))
  assert sorted(batch["index"].tolist()) == [0, 1, 2, 3]
  np.testing.assert_array_equal(sharding.process_rows(batch)["inputs"], batch["inputs"])


def test_resume_after_k_batches_gives_the_same_stream(harmless, wikitext_tokenizer, tmp_path):
  """Stop after k batches, checkpoint with orbax, restore: batches k+1… equal an unbroken run."""
  import jax.numpy as jnp

  from hh.train import checkpoint
  src = tfds_io.source(harmless, "test")
  make = lambda: pipeline.Iterator(pipeline.make_loader(  # noqa: E731
      src, [pipeline.PairTokenizer(wikitext_tokenizer, 128)], 16, seed=3, num_epochs=2))
  unbroken = [next(it)["index"] for it in [make()] for _ in range(8)]
  it = make()
  for _ in range(3):
    next(it)
  mngr = checkpoint.manager(str(tmp_path), keep=1, interval=1)
  checkpoint.save(mngr, 3, {"x": jnp.zeros(())}, it.state(), force=True)
  mngr.wait_until_finished()
  _, data_state = checkpoint.restore_latest(mngr, {"x": jnp.zeros(())}, {"x": None})
  resumed = make()
  resumed.restore(data_state)
  for k in range(3, 8):
    np.testing.assert_array_equal(next(resumed)["index"], unbroken[k])


def _write_rows(path, lines):
  path.parent.mkdir(parents=True, exist_ok=True)
  with gzip.open(path, "wb") as f:
    for line in lines:
      f.write(line if isinstance(line, bytes) else (line + "\n").encode())


GOOD = json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected":
                   "\n\nHuman: hi\n\nAssistant: go away"})
BAD_ROWS = {
    "not_json": '{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: a", "rejec',
    "missing_key": json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant: a"}),
    "non_utf8": b'{"chosen": "\\n\\nHuman: caf\xe9\\n\\nAssistant: a", "rejected": "b"}\n',
    "empty_response": json.dumps({"chosen": "\n\nHuman: hi\n\nAssistant:   ",
                                  "rejected": "\n\nHuman: hi\n\nAssistant: no"}),
    "no_assistant_turn": json.dumps({"chosen": "\n\nHuman: hi", "rejected": "\n\nHuman: yo"}),
    "identical_pair": json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b",
                                  "rejected": "\n\nHuman: a\n\nAssistant: b"}),
    "context_mismatch": json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b",
                                    "rejected": "\n\nHuman: c\n\nAssistant: d"}),
}


@pytest.mark.parametrize("problem", sorted(BAD_ROWS))
def test_bad_rows_raise_with_file_line_and_problem(tmp_path, problem):
  src = tmp_path / "src"
  _write_rows(src / "harmless-base" / "test.jsonl.gz", [GOOD, BAD_ROWS[problem], GOOD])
  kwargs = {"allow_empty_response": False} if problem == "empty_response" else {}
  with pytest.raises(hh_rlhf.BadInput, match=rf"test.jsonl.gz:2: {problem}:"):
    tfds_io.build("hh_rlhf/harmless-base", str(tmp_path / "data"), source_dir=str(src),
                  **kwargs)
  # a failed build leaves no half-written dataset behind
  leftovers = [p for p in (tmp_path / "data").rglob("*") if p.is_file()]
  assert not [p for p in leftovers if "array_record" in p.name or "incomplete" in str(p)]


@pytest.mark.parametrize("problem", sorted(BAD_ROWS))
def test_bad_rows_are_skipped_and_counted(tmp_path, problem):
  src = tmp_path / "src"
  _write_rows(src / "harmless-base" / "test.jsonl.gz", [GOOD, BAD_ROWS[problem], GOOD])
  kwargs = {"allow_empty_response": False} if problem == "empty_response" else {}
  b = tfds_io.build("hh_rlhf/harmless-base", str(tmp_path / "data"), source_dir=str(src),
                    skip_bad=True, **kwargs)
  assert len(tfds_io.source(b, "test")) == 2
  assert b.info.metadata["test"] == {"rows": 3, "examples": 2, f"skipped_{problem}": 1}


def test_missing_source_is_named(tmp_path):
  with pytest.raises(FileNotFoundError, match="expected the official hh-rlhf layout"):
    tfds_io.build("hh_rlhf/helpful-base", str(tmp_path), source_dir=str(tmp_path / "none"))
  with pytest.raises(ValueError, match="unknown config 'hh_rlhf/helpful'; allowed: "):
    tfds_io.build("hh_rlhf/helpful", str(tmp_path))


def test_red_team_attempts_json_array(tmp_path):
  src = tmp_path / "src"
  rows = [{"transcript": "\n\nHuman: how do I pick a lock?\n\nAssistant: I can't help.",
           "rating": 0, "min_harmlessness_score_transcript": 1.5, "task_description": "locks",
           "num_params": "52B", "model_type": "plain lm"}]
  _write_rows(src / "red-team-attempts" / "red_team_attempts.jsonl.gz", [json.dumps(rows)])
  b = tfds_io.build("hh_rlhf/red-team-attempts", str(tmp_path / "data"), source_dir=str(src))
  ex = tfds_io.source(b, "train")[0]
  assert int(ex["num_human_turns"]) == 1 and float(ex["min_harmlessness_score_transcript"]) == 1.5


def test_sampled_responses_that_run_on_into_assistant_markers_keep_the_shared_context():
  """A policy's responses can run on into "\\n\\nAssistant:" markers of their own (a tranche of
  the online loop, seed 1): the pair's context is the longest common prefix at which both start
  an Assistant turn, and each side's text after it is its response. Contexts that diverge in a
  Human turn stay bad input, and a transcript with one Assistant turn more realigns as before."""
  ctx = "\n\nHuman: hi"
  a = f"{ctx}\n\nAssistant: no.\n\nAssistant: still no"
  b = f"{ctx}\n\nAssistant: fine\n\nAssistant: ok"
  counts = collections.Counter()
  row = hh_rlhf.parse_pair({"chosen": a, "rejected": b}, "f:1", "harmless-base", True, counts)
  assert row["context_text"] == ctx and counts["context_realigned"] == 1
  assert row["chosen"] == " no.\n\nAssistant: still no"
  assert row["rejected"] == " fine\n\nAssistant: ok"
  assert hh_rlhf.shared_context(a, b) == ctx
  # one Assistant turn more (the 2 real rows' case): the shorter context
  longer = f"{ctx}\n\nAssistant: x\n\nHuman: y\n\nAssistant: z"
  assert hh_rlhf.shared_context(longer, f"{ctx}\n\nAssistant: w") == ctx
  # diverging Human turns after a shared Assistant turn are not a run-on
  c = f"{ctx}\n\nAssistant: x\n\nHuman: p\n\nAssistant: q"
  d = f"{ctx}\n\nAssistant: x\n\nHuman: r\n\nAssistant: s"
  assert hh_rlhf.shared_context(c, d) is None
  assert hh_rlhf.shared_context("\n\nHuman: a\n\nAssistant: b",
                                "\n\nHuman: c\n\nAssistant: d") is None
