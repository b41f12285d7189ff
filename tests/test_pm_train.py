"""The PM stage end to end on real hh-rlhf rows, and the scoring service against it."""
import gzip
import json

import numpy as np
import pytest

from conftest import DATA, HH_RLHF, tiny_lm_config
from hh import main as hh_main
from hh.pm import score as pm_score
from hh.tokenizer import ASSISTANT


@pytest.fixture(scope="module")
def real_pm(tmp_path_factory, wikitext_tokenizer):
  root = tmp_path_factory.mktemp("pm")
  hh_main.run(tiny_lm_config(wikitext_tokenizer.path, steps=3), str(root / "lm"))
  from configs import pm
  config = pm.get_config("size=tiny,data=hh_rlhf")
  config.pm.init_from = str(root / "lm")
  config.tokenizer.path = wikitext_tokenizer.path
  config.pm.finetune.update(dict(max_pairs=64, seq_len=64, batch_pairs=8))
  config.pm.finetune.loop.update(dict(eval_every=4, eval_at=(2,)))
  config.progress = False
  result = hh_main.run(config, str(root / "pm"))
  return root / "pm", result


def test_real_data_runs_and_reports_the_shorter_response_baseline(real_pm):
  workdir, result = real_pm
  entry = result["by_test_set"]["hh_rlhf/harmless-base:test[90%:]"]
  assert entry["pairs"] == DATA.test_rows // 10 and 0.0 <= entry["accuracy"] <= 1.0
  # the baseline, independently from the raw JSON rows of the last tenth
  with gzip.open(HH_RLHF / "harmless-base" / "test.jsonl.gz", "rt") as f:
    rows = [json.loads(line) for line in f][DATA.test_rows - DATA.test_rows // 10:]
  final = lambda t: t[t.rfind(ASSISTANT) + len(ASSISTANT):]  # noqa: E731
  shorter = np.mean([len(final(r["chosen"])) < len(final(r["rejected"])) for r in rows])
  assert entry["shorter_response_baseline"] == pytest.approx(shorter)
  assert result["phases"]["finetune"]["steps"] == 8  # 64 pairs / 8 per step, one epoch
  val = [json.loads(x) for x in (workdir / "finetune" / "metrics.jsonl").read_text().splitlines()
         if '"val"' in x]
  assert [v["pairs_seen"] for v in val] == [16, 32, 64]


def test_scorer_reproduces_the_evaluation_scores(real_pm):
  workdir, result = real_pm
  d = np.load(workdir / "eval_scores.npz")
  from hh.data import tfds_io
  src = tfds_io.build("hh_rlhf/harmless-base", str(workdir / "tfds"),
                      source_dir=str(HH_RLHF)).as_data_source(
                          split="test[90%:]")
  idx = d["index"][:5].astype(int)
  ctx = [tfds_io.text(src[int(i)]["context_text"]) for i in idx]
  chosen = [tfds_io.text(src[int(i)]["chosen"]) for i in idx]
  scorer = pm_score.Scorer(str(workdir), batch_size=8)
  np.testing.assert_allclose(scorer.score(ctx, chosen), d["good"][:5], rtol=1e-4, atol=1e-4)
  # mean removal: the offset is the mean of all raw test scores, so the stored ones average 0
  assert np.mean(np.concatenate([d["good"], d["bad"]])) == pytest.approx(0.0, abs=1e-5)


def test_pm_starts_from_the_lm_trunk_with_the_eoc_row_of_the_human_marker(real_pm, tmp_path):
  """The PM stage's own initialisation (own checkpoint → init_from → fresh), on the LM the real
  PM was trained from: trunk = the LM's, EOC embedding row = the "\\n\\nHuman:" row, head 0."""
  import jax

  from configs import pm
  from hh import sharding
  from hh import tokenizer as tok_lib
  from hh.pm import train as pm_train
  from hh.train import build as build_lib
  from hh.train import checkpoint
  workdir, _ = real_pm
  lm_dir = str(workdir.parent / "lm")
  config = pm.get_config("size=tiny,data=hh_rlhf")
  config.pm.init_from = lm_dir
  tok = tok_lib.Tokenizer.load(json.loads((workdir / "pm_result.json").read_text())["tokenizer"])
  mesh = sharding.make_mesh(config.mesh)
  with jax.set_mesh(mesh):
    built = pm_train.build(config, config.pm.finetune, mesh, tok.vocab_size, steps=4)
    mngr = checkpoint.manager(str(tmp_path), 1, 1)
    state = build_lib.initial_state(built, mngr, None,
                                    pm_train._init_from(config, built, (lm_dir, "lm"), tok))
    lm_params = checkpoint.load_params(lm_dir, {"trunk": built.abstract.params["trunk"]},
                                       {"trunk": built.shardings.params["trunk"]})
  emb = np.asarray(state.params["trunk"]["embed"]["embedding"])
  lm_emb = np.asarray(lm_params["trunk"]["embed"]["embedding"])
  np.testing.assert_array_equal(emb[tok.eoc_id], lm_emb[tok.human_id])
  assert not np.array_equal(lm_emb[tok.eoc_id], lm_emb[tok.human_id])
  rows = np.arange(len(emb)) != tok.eoc_id
  np.testing.assert_array_equal(emb[rows], lm_emb[rows])
  np.testing.assert_array_equal(np.asarray(state.params["trunk"]["layers"]["mlp"]["wi"]),
                                np.asarray(lm_params["trunk"]["layers"]["mlp"]["wi"]))
  assert float(np.abs(np.asarray(state.params["head"]["kernel"])).max()) == 0.0


def test_ppo_scores_responses_on_ids_or_on_text_alike(real_pm):
  """ppo_stage.response_scores: a PM of the policy's tokenizer scores the policy's ids (the
  "\\n\\nAssistant:" piece + body); a PM of another tokenizer scores the decoded text, written as
  hh-rlhf writes a response (a space after "Assistant:"). Through the same tokenizer both give
  the PM's score of the hh-rlhf row itself; the text without that space scores differently (the
  bug this guards against)."""
  from hh.data import tfds_io
  from hh.ppo import train as ppo_stage
  workdir, _ = real_pm
  src = tfds_io.build("hh_rlhf/harmless-base", str(workdir / "tfds"),
                      source_dir=str(HH_RLHF)).as_data_source(split="test[90%:]")
  scorer = pm_score.Scorer(str(workdir), batch_size=8)
  tok = scorer.tok
  rows = [(tfds_io.text(src[i]["context_text"]), tfds_io.text(src[i]["chosen"])) for i in range(40)]
  bodies = {i: tok.encode(ASSISTANT + r)[1:] for i, (_, r) in enumerate(rows)}
  # rows whose text survives ids → text (no piece outside the 512-piece vocabulary)
  keep = [i for i, (_, r) in enumerate(rows) if tok.encode(ASSISTANT + r)[0] == tok.assistant_id
          and r == " " + tok.decode(bodies[i]).strip()]
  assert len(keep) >= 8
  ctx, resp = [rows[i][0] for i in keep], [rows[i][1] for i in keep]
  body = [bodies[i] for i in keep]
  want = scorer.score(ctx, resp)
  np.testing.assert_allclose(ppo_stage.response_scores(scorer, True, tok, ctx, body), want,
                             atol=1e-6)
  np.testing.assert_allclose(ppo_stage.response_scores(scorer, False, tok, ctx, body), want,
                             atol=1e-6)
  no_space = scorer.score(ctx, [r.strip() for r in resp])
  assert np.abs(no_space - want).max() > 1e-4


def test_a_scorer_of_any_batch_size_pads_to_the_mesh_and_scores_alike(real_pm):
  """Host-side scoring pads each call to a multiple of the batch shards (data × fsdp), so a batch
  size the mesh does not divide (1, 3 rows on 8 devices) runs and gives the 8-row scores."""
  import math

  from hh import sharding
  workdir, _ = real_pm
  ref = pm_score.Scorer(str(workdir), batch_size=8)
  shards = math.prod(ref.mesh.shape[a] for a in sharding.BATCH_AXES)
  assert shards > 1
  ctx = ["\n\nHuman: hello there"] * 5 + ["\n\nHuman: what is a cat?"] * 6
  resp = [" " + "word " * k for k in range(11)]
  want = ref.score(ctx, resp)
  for bs in (1, 3):
    sc = pm_score.Scorer(str(workdir), batch_size=bs)
    assert sc.batch_size == shards * -(-bs // shards)
    np.testing.assert_allclose(sc.score(ctx, resp), want, atol=1e-5)
