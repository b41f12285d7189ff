"""The online loop killed and resumed, and what needs the pipeline's PMs and π0 beside it: the
online loop (hh/online/loop.py, two iterations on an uninterrupted pipeline's LM, PM and π0) is
killed twice in its second iteration — between its tranche's two files, and just after its PM's
first checkpoint save (a PM that finetunes from the base PM's PMP resumes from its own
checkpoint) — and resumes to the uninterrupted loop's tranches, PMs and policies; labels from
people, AI feedback, the report's online section, deployed best-of-k, and PPO's test PMs.

The uninterrupted pipeline is tests/test_kill.py's reference run made again here (same command,
same outputs), so that this file and that one run side by side on the two test workers.
"""
import json
import os
import signal

import crash_resume
import numpy as np
import pytest
from kill_at import running_stage
from test_kill import _run
from test_sim import small_pipeline_config

from conftest import pipeline_env

ONLINE_KILLS = [("online/iter_2/tranche", "hh.online.tranche:write", 1, "after"),
                ("online/iter_2/pm", "hh.train.checkpoint:save", 1, "after")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, wikitext_tokenizer):
  """The uninterrupted pipeline, all seven stages."""
  ref = tmp_path_factory.mktemp("pipeline") / "uninterrupted"
  done = _run(ref, wikitext_tokenizer.path, pipeline_env())
  assert done.returncode == 0, done.stderr[-3000:]
  return {"ref": ref, "tokenizer": wikitext_tokenizer.path}


def test_ppo_scores_rollouts_under_test_pms_and_held_out_samples_by_request_kind(
    runs, online_runs, tmp_path):
  """Figs. 4, 13, 33 and 14: one PPO iteration on the pipeline's π0 and PM, in-process, with that
  same PM also named as a test PM — it scores the same tokens, so its score is the training PM's
  — and the online loop's first PM as a second one, whose score differs (a test PM that reused
  the training PM's scores would not);
  the PM score split by request kind recombines (11 helpful, 5 harmful rows) to the whole and
  differs between kinds by more than the tolerance (a swap would show); π0's held-out PM scores by kind equal a
  recomputation from regenerated samples."""
  from hh import sources
  from hh.pm import score as pm_score
  from hh.policy import policy as policy_lib
  from hh.policy import sample as sample_lib
  from hh.ppo import train as ppo_stage
  from hh.train import metrics
  ref = runs["ref"]
  config = small_pipeline_config(runs["tokenizer"], all_stages=True)
  other = online_runs["ref"] / "online" / "iter_1" / "pm"
  config.ppo.update(dict(test_pms=(str(ref / "pm"), str(other)), logp_sets=(),
                         eval_max_prompts=12))
  config.ppo.loop.update(dict(steps=1, eval_every=1))
  out = ppo_stage.run(config, str(tmp_path / "ppo"), str(ref / "cd"), str(ref / "pm"), str(ref))
  (train,) = metrics.read(str(tmp_path / "ppo"), "train")
  assert train["test_pm_score/0"] == pytest.approx(train["pm_score"], abs=1e-6)
  assert abs(train["test_pm_score/1"] - train["pm_score"]) > 1e-4
  assert (11 * train["pm_score_helpful"] + 5 * train["pm_score_harmful"]) / 16 == pytest.approx(
      train["pm_score"], abs=2e-6)
  # a swap of the kinds would move the recombination by 6/16 of this (the tiny PM's scores are
  # close together: 1.5e-4 here), far above the tolerance
  assert abs(train["pm_score_helpful"] - train["pm_score_harmful"]) > 5e-5

  places = sources.Places.from_config(config, str(tmp_path), str(ref))
  ctx, fam = sources.prompts(config.ppo.eval_prompts, places, 12)
  assert 2 <= (fam == "harmful").sum() <= 10
  pi0 = policy_lib.load(str(ref / "cd"), "pi0")
  sampling = sample_lib.SamplingConfig(max_new_tokens=8, temperature=1.0,
                                       stop_ids=sample_lib.end_of_turn_ids(pi0.tok))
  s = policy_lib.generate(pi0, ctx, 1, sampling, config.seed + 7, config.sampling.batch_size,
                          config.sampling.buckets)
  bodies = ppo_stage.response_bodies(s.tokens, s.mask, sampling.stop_ids)
  scores = pm_score.Scorer(str(ref / "pm")).score_ids(
      pi0.tok.encode_batch(ctx), [[pi0.tok.assistant_id] + b for b in bodies])
  for kind, sel in (("helpful", fam != "harmful"), ("harmful", fam == "harmful")):
    assert out["before"][f"pm_score_{kind}"] == pytest.approx(scores[sel].mean(), abs=1e-5)
    assert out["before"][f"pm_score_{kind}_se"] == pytest.approx(
        scores[sel].std(ddof=1) / np.sqrt(sel.sum()), abs=1e-5)


@pytest.fixture(scope="module")
def online_runs(runs, tmp_path_factory):
  """The online loop (two iterations) on the uninterrupted pipeline, uninterrupted and killed."""
  root = tmp_path_factory.mktemp("online_kill")
  env, tok, base = pipeline_env(), runs["tokenizer"], str(runs["ref"])
  ref, killed = root / "uninterrupted", root / "killed"
  done = _run(ref, tok, env, online=base)
  assert done.returncode == 0, done.stderr[-3000:]
  deaths = [(kill, _run(killed, tok, env, *kill, online=base),
             running_stage(str(killed), ("online",), 2)) for kill in ONLINE_KILLS]
  done = _run(killed, tok, env, online=base)
  assert done.returncode == 0, done.stderr[-3000:]
  return {"ref": ref, "killed": killed, "deaths": deaths}


def test_the_online_loop_killed_in_its_second_iteration_resumes_to_the_same_outputs(online_runs):
  """The same tranches, PMs and policies as an uninterrupted loop."""
  for kill, p, stage in online_runs["deaths"]:
    assert p.returncode == -signal.SIGKILL, f"{kill}: exit {p.returncode}\n{p.stderr[-3000:]}"
    assert stage == kill[0]  # it died inside the intended step
  want = crash_resume.outputs(str(online_runs["ref"]))
  got = crash_resume.outputs(str(online_runs["killed"]))
  for i in (1, 2):  # both tranches, both PMs, both policies (PPO state and the export)
    it = f"online/iter_{i}/"
    assert any(k.startswith(it + "tranche/") and k.endswith(".jsonl") for k in want)
    assert sum(k.startswith(it) and "checkpoints" in k for k in want) == 3  # PM, PPO, export
  assert "online/online_result.json" in want and "online/evaluation.json" in want
  differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
  assert not differ, f"outputs differ after the kills: {differ}"


def test_labels_from_people_wait_and_the_resumed_tranche_is_the_no_wait_runs(runs, online_runs,
                                                                             tmp_path):
  """``online.labels="people"``: the loop samples iteration 1's pairs, writes what to label (A
  and B in a random order, nothing else) and stops with one line and its exit code; a rerun
  with half the judgements stops again and resamples nothing; with all of them it goes on, and
  its tranche is the annotator run's byte for byte when the judgements are the annotator's."""
  from hh import workdir as wd
  env, tok, base = pipeline_env(), runs["tokenizer"], str(runs["ref"])
  work = tmp_path / "people"
  it1, ref = work / "online" / "iter_1", online_runs["ref"] / "online" / "iter_1"
  p = _run(work, tok, env, online=base, labels="people")
  assert p.returncode == wd.WAIT_EXIT_CODE, p.stderr[-3000:]
  line = p.stderr.strip().splitlines()[-1]
  assert line == (f"hh: online iteration 1: 32 of 32 pairs wait for judgements; label "
                  f"{it1}/to_label.jsonl into {it1}/labels.jsonl (python -m hh.label serve "
                  f"--pairs={it1}/to_label.jsonl --out={it1}/labels.jsonl) and run the same "
                  "command again"), line
  def sampled_files():  # contents and inodes: a rewrite with equal bytes would show too
    return {f: ((it1 / f).read_bytes(), (it1 / f).stat().st_ino) for f in (
        "to_label.jsonl", "sampled.jsonl", "stages/sample.json")}
  sampled = sampled_files()
  shown = [json.loads(x) for x in sampled["to_label.jsonl"][0].splitlines()]
  want = {r["id"]: r for r in map(json.loads, (ref / "tranche" / "pairs.jsonl").open())}
  assert [r["id"] for r in shown] == list(want) and all(set(r) == {"id", "context", "a", "b"}
                                                        for r in shown)
  flipped = [(r["a"], r["b"]) == (want[r["id"]]["b"], want[r["id"]]["a"]) != (r["b"], r["a"])
             for r in shown]
  assert 5 < sum(flipped) < 27  # a fair coin per pair (identical responses never count)
  judgements = [json.dumps({"id": k, "labeller": "test"} | (
      {"preferred": r["a"] if r["a_preferred"] else r["b"]} if r["kept"] else {"unsure": True}))
      + "\n" for k, r in want.items()]
  (it1 / "labels.jsonl").write_text("".join(judgements[:16]))
  p = _run(work, tok, env, online=base, labels="people")
  assert p.returncode == wd.WAIT_EXIT_CODE and "16 of 32 pairs wait" in p.stderr, p.stderr[-3000:]
  assert sampled_files() == sampled  # nothing sampled again
  with (it1 / "labels.jsonl").open("a") as f:
    f.write("".join(judgements[16:]))
  p = _run(work, tok, env, "online/iter_1/tranche", "hh.workdir:mark", 1, "after", online=base,
           labels="people")  # stopped once the tranche is recorded
  assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
  assert json.loads((it1 / "stages" / "tranche.json").read_text())["judged"] == 32
  files = sorted(str(f.relative_to(ref)) for f in (ref / "tranche").rglob("*.jsonl.gz"))
  assert files and all((it1 / f).read_bytes() == (ref / f).read_bytes() for f in files)


def test_ai_feedback_prefers_the_response_its_pm_scores_higher(runs, online_runs):
  """``online.labels="pm:<dir>"`` (RLAIF): on the loop's first sampled pairs, the labels are the
  sign of the PM's score difference, scored one text at a time by a Scorer of its own; identical
  responses are unsure, and a margin above every difference leaves no pair."""
  from hh.online import tranche
  from hh.pm import score as pm_score
  pm = str(runs["ref"] / "pm")
  rows = [json.loads(x) for x in (online_runs["ref"] / "online" / "iter_1" / "sampled.jsonl")
          .read_text().splitlines()]
  pairs = [tranche.Pair(r["id"], r["context"], r["family"], r["a"], r["b"]) for r in rows]
  labels = tranche.PMLabels(pm).label(pairs)
  one = pm_score.Scorer(pm, batch_size=1)
  s = np.array([[one.score([p.context], [" " + x])[0] for x in (p.a, p.b)] for p in pairs])
  same = np.array([p.a == p.b for p in pairs])
  assert not same.all()
  np.testing.assert_array_equal(labels.kept, ~same)
  clear = ~same & (np.abs(s[:, 0] - s[:, 1]) > 1e-5)  # batching may move a score by rounding
  assert clear.sum() > 0.8 * (~same).sum()
  np.testing.assert_array_equal(labels.a_preferred[clear], (s[:, 0] > s[:, 1])[clear])
  assert 0 < labels.a_preferred[~same].sum() < (~same).sum()
  assert not tranche.PMLabels(pm, margin=1e9).label(pairs).kept.any()


def test_the_reports_online_section_shows_the_loops_results(online_runs, tmp_path):
  """hh/report.py's online section: one row per tranche with the result's kept counts and gold
  quality, one per policy with its gold Elo overall and per task (π0 the reference, +0)."""
  from hh import report
  online_dir = str(online_runs["ref"] / "online")
  r = json.loads((online_runs["ref"] / "online" / "online_result.json").read_text())
  text = "\n".join(report.online_section(online_dir, str(tmp_path)))
  for it in r["iterations"]:
    assert f"| {it['iteration']}: {it['kind']} | {it['kept']} of {it['pairs']} |" in text
  assert [it["kind"] for it in r["iterations"]] == ["rejection-sampled", "online"]
  assert set(r["evaluation"]) == {"pi0", "static", "online_1", "online_2", "reference"}
  assert "| pi0 | +0 ± 0 |" in text and (tmp_path / "online.png").exists()
  assert "gold_elo/helpful" in r["evaluation"]["online_1"]  # held-out helpful prompts

  def elo(m, key):
    return f"{m[key]['elo']:+.0f} ± {m[key]['se']:.0f}" if key in m else "–"
  for n, m in r["evaluation"].items():  # overall, helpfulness, harmlessness Elo per policy
    assert f"| {n} | {elo(m, 'gold_elo')} | {elo(m, 'gold_elo/helpful')} | " \
        f"{elo(m, 'gold_elo/harmless')} |" in text, n
  assert report.online_section(str(tmp_path / "none"), str(tmp_path)) == []


def test_deployed_responses_are_the_best_of_k_under_the_newest_pm(runs, online_runs, tmp_path):
  """``config.online.deploy_k`` (the deployed policy plus rejection sampling): iteration 2's
  tranche collected again from the uninterrupted loop's iteration-1 policy and PM. At deploy_k = 1
  it is the loop's own tranche, byte for byte (plain samples, nothing reranked); at deploy_k = 3
  each response is one of its group's 3 samples of that policy, and the one iteration 1's PM
  scores highest (on the text, as hh-rlhf writes it, by a Scorer of its own) where the base PM
  would have picked others; the record names the PM."""
  from test_sim import small_online_config

  from hh import sources
  from hh.online import loop as online
  from hh.pm import score as pm_score
  from hh.policy import policy as policy_lib
  base = str(runs["ref"])
  config = small_online_config(runs["tokenizer"], base)
  src = online_runs["ref"] / "online"

  def collect(name, k):
    work = tmp_path / name
    (work / "iter_1").mkdir(parents=True)
    for step in ("ppo", "pm"):
      os.symlink(src / "iter_1" / step, work / "iter_1" / step)
    cfg = config.copy_and_resolve_references()
    cfg.online.deploy_k = k
    places = sources.Places.from_config(cfg, str(work), base)
    sampled = online.sample(cfg, str(work), 2, places, os.path.join(base, "pm"), cfg.online.pi0)
    rec = online.collect(cfg, str(work), 2, sampled)
    rows = [json.loads(x) for x in (work / "iter_2" / "tranche" / "pairs.jsonl").open()]
    return rec, rows, work

  rec, rows, _ = collect("k1", 1)
  assert (tmp_path / "k1/iter_2/tranche/pairs.jsonl").read_bytes() == \
      (src / "iter_2/tranche/pairs.jsonl").read_bytes()
  assert "best_of" not in rec and "reranked_by" not in rec
  k = 3
  rec, rows, work = collect("k3", k)
  assert rec["best_of"] == k and rec["reranked_by"] == str(work / "iter_1" / "pm")
  pol = policy_lib.load(str(src / "iter_1" / "ppo" / "policy"), "check")
  sampling = policy_lib.sampling_config(pol, config.sampling)
  contexts = [r["context"] for r in rows]
  s = policy_lib.generate(pol, contexts, 2 * k, sampling, config.seed + 200,
                          config.sampling.batch_size, config.sampling.buckets)
  assert config.policies.text_scoring  # the loop scores the texts (the PM's own tokenizer)
  texts = np.array(s.texts, object).reshape(len(rows), 2, k)
  picked_by = {}
  for name, pm in (("newest", src / "iter_1" / "pm"), ("base", runs["ref"] / "pm")):
    sc = pm_score.Scorer(str(pm)).score(s.contexts, [" " + t for t in s.texts]).reshape(
        len(rows), 2, k)
    picked_by[name] = [texts[p, j, sc[p, j].argmax()] for p in range(len(rows)) for j in (0, 1)]
    if name == "newest":  # the chosen text scores the group's maximum (ties: any of them)
      for p, r in enumerate(rows):
        for j, key in ((0, "a"), (1, "b")):
          hit = np.flatnonzero(texts[p, j] == r[key])
          assert len(hit) and sc[p, j, hit].max() == pytest.approx(sc[p, j].max(), abs=1e-6)
  got = [r[key] for r in rows for key in ("a", "b")]
  assert got == picked_by["newest"] and got != picked_by["base"]
