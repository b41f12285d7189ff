"""SIGKILL once in every kind of stage, rerun the same command each time, and the outputs equal an
uninterrupted run's bit for bit (the fast CI cases of the crash-resume check; the random-moment
version over the main command is tests/crash_resume.py, slow).

Every run is a fresh process (tests/kill_at.py: the small pipeline of tests/test_sim.py, all
seven stages). The kills land where a resume has work to do: in the middle of the world's
dataset build (a TFDS ``incomplete`` folder left behind), just after a checkpoint save was
started in the PM's loop (orbax still writing it; the LM and CD run the same loop and checkpoint
code, and their kills are left to tests/crash_resume.py for CI time), between PPO's update and
its checkpoint (one iteration to redo), between the policies stage's two result files, and
between two of the report's figures. The online loop (hh/online/loop.py, on the uninterrupted
pipeline's LM, PM and π0) is killed twice in its second iteration — between its tranche's two
files, and just after its PM's first checkpoint save (a PM that finetunes from the base PM's
PMP resumes from its own checkpoint; PPO's mid-run resume is the pipeline's kill above) — and
resumes to the uninterrupted loop's tranches, PMs and policies. The processes share a persistent
compilation cache, so the reruns do not pay XLA's compile time again. The uninterrupted
pipeline's policy-stage outputs (context distillation, PPO's first iteration, policy evaluation,
best-of-N) are checked here too, on the run that makes them anyway; and the same pipeline in 2
processes (jax.distributed, started with SLURM's variables) gives its records.
"""
import json
import os
import signal
import subprocess
import sys

import crash_resume
import numpy as np
import pytest
import test_multihost
from kill_at import running_stage
from test_sim import small_pipeline_config

from conftest import pipeline_env
from hh.policy import best_of_n

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_AT = os.path.join(REPO, "tests", "kill_at.py")
STAGES = ("world", "lm", "pm", "cd", "ppo", "policies", "report")
KILLS = [("world", "hh.sim.dataset:generate", 2, "before"),
         ("pm", "hh.train.checkpoint:save", 2, "after"),
         ("ppo", "hh.train.checkpoint:save", 2, "before"),
         ("policies", "hh.policy.evaluate:write", 2, "before"),
         ("report", "hh.io:write_figure", 2, "before")]


ONLINE_KILLS = [("online/iter_2/tranche", "hh.online.tranche:write", 1, "after"),
                ("online/iter_2/pm", "hh.train.checkpoint:save", 1, "after")]


def _run(workdir, tokenizer, env, *kill, online=None, labels=None):
  flag = ([f"--online={online}"] if online else []) + ([f"--labels={labels}"] if labels else [])
  return subprocess.run([sys.executable, KILL_AT, *flag, str(workdir), tokenizer,
                         *map(str, kill)], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=1200)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, wikitext_tokenizer):
  """The uninterrupted run, and the same command killed once per kill point then rerun."""
  root = tmp_path_factory.mktemp("kill")
  env = pipeline_env()  # XLA's default optimisation, the session's compilation cache
  ref, killed = root / "uninterrupted", root / "killed"
  done = _run(ref, wikitext_tokenizer.path, env)
  assert done.returncode == 0, done.stderr[-3000:]
  deaths = [(kill, _run(killed, wikitext_tokenizer.path, env, *kill),
             running_stage(str(killed), STAGES)) for kill in KILLS]
  done = _run(killed, wikitext_tokenizer.path, env)
  assert done.returncode == 0, done.stderr[-3000:]
  return {"ref": ref, "killed": killed, "deaths": deaths, "tokenizer": wikitext_tokenizer.path}


def test_a_kill_in_every_kind_of_stage_then_a_rerun_gives_the_uninterrupted_outputs(runs):
  for kill, p, stage in runs["deaths"]:
    assert p.returncode == -signal.SIGKILL, f"{kill}: exit {p.returncode}\n{p.stderr[-3000:]}"
    assert "killing:" in p.stderr
    assert stage == kill[0]  # it died inside the intended stage
  want, got = crash_resume.outputs(str(runs["ref"])), crash_resume.outputs(str(runs["killed"]))
  assert any(k.endswith("ppo_result.json") for k in want)
  assert sum("checkpoints" in k for k in want) == 6  # LM, PMP, PM, CD, PPO, the PPO export
  differ = sorted(k for k in set(want) | set(got) if want.get(k) != got.get(k))
  assert not differ, f"outputs differ after the kills: {differ}"
  # nothing half-written is left where a later stage or a user reads
  leftovers = [os.path.join(d, f) for d, dirs, files in os.walk(runs["killed"]) for f in files
               if ".tmp" in f and "checkpoints" not in d]
  assert not leftovers, leftovers


def test_two_processes_run_every_stage_as_the_one_process_run(runs, tmp_path):
  """world → LM → PM → CD → PPO → policies → report in 2 processes, started as srun starts
  them (jax.distributed.initialize() with no arguments): every stage record equals the
  uninterrupted run's (1 process × 2 devices) within test_multihost.TOLERANCE. One device per
  process, so the global mesh is the reference's (121 s here against 175 s with 4 each, the
  kill tests' file being CI's longest); tests/test_multihost.py's slow test runs 2 × 4 devices
  and an online iteration."""
  two = tmp_path / "two"
  test_multihost.launch(two, runs["tokenizer"], 2, 1, launcher="slurm", optimise=True,
                        command=[sys.executable, KILL_AT, str(two), runs["tokenizer"]])
  one, got = test_multihost.records(runs["ref"]), test_multihost.records(two)
  assert list(got) == list(one) == sorted(STAGES)
  differ = test_multihost.differences(one, got)
  assert not differ, differ


def test_a_rerun_skips_finished_stages_and_another_config_is_refused(runs):
  """(In this process, on the uninterrupted run's workdir.)"""
  from hh import main as hh_main
  from hh.sim import stage as sim_stage
  tmp_path = runs["ref"]
  config = small_pipeline_config(runs["tokenizer"], all_stages=True)
  report = (tmp_path / "report" / "report.md").read_text()
  assert "Bayes ceiling" in report and (tmp_path / "report" / "world.png").exists()
  pm_phases = json.loads((tmp_path / "pm" / "pm_result.json").read_text())["phases"]
  assert list(pm_phases) == ["pmp", "finetune"]  # the paper's path, PMP first
  # 100 ranked pairs → 200 binarized, 15% held out → 170 trained on, 170 // 16 = 10 steps.
  assert (pm_phases["pmp"]["pairs"], pm_phases["pmp"]["steps"]) == (170, 10)
  assert "PMP (170 pairs, 10 steps) then finetuning (" in report
  marker = (tmp_path / "stages" / "lm.json").stat().st_mtime
  second = hh_main.run(config, str(tmp_path))  # resumes: every stage but the report is skipped
  lm = json.loads((tmp_path / "lm" / "lm_result.json").read_text())
  assert second["lm"] == lm and lm["step"] == 10
  assert lm["val_loss"] < np.log(lm["vocab_size"]) - 0.5  # below uniform
  assert (tmp_path / "stages" / "lm.json").stat().st_mtime == marker
  saved = (tmp_path / "config.json").read_text()
  assert json.loads((tmp_path / "pm" / "config.json").read_text())["pm"] == \
      json.loads(saved)["pm"]  # the scorer reads a pipeline's PM folder on its own
  # another world in the same workdir is refused, naming the key — dict-valued ones too
  for key, value in [("seed", 5), ("response_mix", {**config.world.response_mix,
                                                    "wrong": 0.21})]:
    changed = small_pipeline_config(runs["tokenizer"], all_stages=True)
    changed.world[key] = value
    with pytest.raises(ValueError, match=rf"another config.*world\.{key}"):
      hh_main.run(changed, str(tmp_path))
  assert (tmp_path / "config.json").read_text() == saved  # a refused run writes nothing
  # so is another stage config for a finished stage
  changed = small_pipeline_config(runs["tokenizer"], all_stages=True)
  changed.pm.finetune.optim.lr = 1e-4
  with pytest.raises(ValueError, match=r"pm stage made with another config.*pm\.finetune\.optim\.lr"):
    hh_main.run(changed, str(tmp_path))
  # and the datasets built from another world are refused even without the stage records
  other = dict(config.world.to_dict(), response_mix={**config.world.response_mix, "wrong": 0.3})
  with pytest.raises(ValueError, match=r"another config.world \(differs in world.response_mix"):
    sim_stage.build(other, str(tmp_path), "helpful")


def test_context_distillation_reduces_the_kl_to_the_prompted_teacher(runs):
  """(The policy stages' outputs are checked on the uninterrupted run, which makes them anyway.)"""
  cd = json.loads((runs["ref"] / "stages" / "cd.json").read_text())
  assert cd["step"] == 4
  assert 0 < cd["val_kl"] < cd["val_kl_start"], cd


def test_policies_stage_outputs(runs):
  """Elo reference at 0; π0's KL to itself is rounding and PPO's policy has moved; best-of-N's
  PM score never falls with N (a max over a superset) and its KL axis is log N − (N−1)/N; the
  tranche has one hh-rlhf line per best-of-N prompt."""
  out = runs["ref"] / "policies"
  ev = json.loads((out / "evaluation.json").read_text())
  pol = ev["policies"]
  assert set(pol) == {"lm", "lm+hhh", "pi0", "ppo"}  # PPO's exported final policy
  assert abs(pol["pi0"]["kl_to_pi0"]["mean"]) < 1e-5  # sampler vs scorer rounding
  # two PPO steps at this size move the policy by ~7e-4 nats per response (measured)
  assert abs(pol["ppo"]["kl_to_pi0"]["mean"]) > 1e-4
  assert pol["pi0"]["gold_elo"] == {"elo": 0.0, "se": 0.0,
                                    "comparisons": pol["pi0"]["gold_elo"]["comparisons"]}
  assert ev["rows"] == 4 * 1  # policies.max_prompts × samples
  bo = json.loads((out / "best_of_n.json").read_text())["policies"]
  pm = [k for k in bo["N=1"] if k.startswith("pm_score/")][0]
  assert bo["N=2"][pm]["mean"] >= bo["N=1"][pm]["mean"]
  assert bo["N=2"]["kl_bound"] == pytest.approx(float(best_of_n.kl_bound(2)))
  lines = [json.loads(line) for line in (out / "best_of_n.jsonl").read_text().splitlines()]
  assert len(lines) == 2  # policies.best_of_prompts
  assert all(set(x) == {"chosen", "rejected"} and "\n\nAssistant: " in x["chosen"]
             for x in lines)
  assert (out / "evaluation.png").exists()
  report = (runs["ref"] / "report" / "report.md").read_text()
  assert "## Context distillation" in report and "### Best-of-N" in report and "| ppo |" in report


def test_ppo_first_iteration_is_on_policy(runs):
  """Iteration 1: the policy is π0, so the ratio of the first minibatch is 1 and the KL 0."""
  rows = [json.loads(line) for line in (runs["ref"] / "ppo" / "metrics.jsonl").read_text()
          .splitlines()]
  train = [r for r in rows if r["split"] == "train"]
  assert [r["step"] for r in train] == [1, 2]
  assert train[0]["first_minibatch_ratio"] == pytest.approx(1.0, abs=1e-5)
  assert abs(train[0]["kl"]) < 1e-4
  # the loop's held-out evaluation at the last step is the result's "after" (evaluated once)
  val = [r for r in rows if r["split"] == "val"]
  after = json.loads((runs["ref"] / "ppo" / "ppo_result.json").read_text())["after"]
  assert [r["step"] for r in val] == [2] and len(after) > 10
  np.testing.assert_equal(after, {k: val[0][k] for k in after})  # NaN == NaN here


def test_ppo_measures_the_log_p_accuracy_of_its_policy(runs, tmp_path):
  """Fig. 34 during RL: PPO's last evaluation holds the exported policy's mean log-p accuracy on
  the first 15 held-out helpful comparisons, recomputed here from the raw rows (8 devices here,
  2 there: equal where no pair of different texts is within 1e-3 of a tie; identical texts tie
  and count half). 13 untied pairs, an odd number: swapped responses cannot score the same."""
  from hh import sources
  from hh.data import tfds_io
  from hh.policy import policy as policy_lib
  config = small_pipeline_config(runs["tokenizer"], all_stages=True)
  src = sources.open_split("hh_sim/helpful:test",
                           sources.Places.from_config(config, str(tmp_path), str(runs["ref"])))
  rows = [src[i] for i in range(15)]
  ctx = [tfds_io.text(r["context_text"]) for r in rows]
  pol = policy_lib.load(str(runs["ref"] / "ppo" / "policy"), "ppo")
  s, k = policy_lib.text_log_probs(pol, ctx * 2, [tfds_io.text(r["chosen"]) for r in rows] +
                                   [tfds_io.text(r["rejected"]) for r in rows], 8, 64)
  mean = s / np.maximum(k, 1)
  good, bad = mean[:15], mean[15:]
  same = np.array([tfds_io.text(r["chosen"]) == tfds_io.text(r["rejected"]) for r in rows])
  assert np.all(good[same] == bad[same]) and np.min(np.abs(good - bad)[~same]) > 1e-3
  assert (~same).sum() % 2 == 1
  after = json.loads((runs["ref"] / "ppo" / "ppo_result.json").read_text())["after"]
  want = np.mean((good > bad) + 0.5 * same)  # the world has pairs of identical texts: ties
  assert after["logp_accuracy/hh_sim/helpful:test"] == pytest.approx(want, abs=1e-12)


def test_ppo_stage_moves_the_kl_coefficient_towards_a_target_across_a_log_interval(runs, tmp_path):
  """``config.ppo.kl_target`` in the stage: far above the rollouts' KL, λ falls by the
  controller's full step each iteration (0.001 → ×0.8 → ×0.8 at horizon = rollout batch); two
  iterations in one log interval (the metrics kept across a donated update)."""
  from hh.ppo import train as ppo_stage
  from hh.train import metrics
  ref = runs["ref"]
  config = small_pipeline_config(runs["tokenizer"], all_stages=True)
  config.ppo.update(dict(logp_sets=(), eval_max_prompts=4, kl_target=100.0, kl_horizon=16.0))
  config.ppo.loop.update(dict(steps=2, log_every=2, eval_every=2))
  ppo_stage.run(config, str(tmp_path / "ppo"), str(ref / "cd"), str(ref / "pm"), str(ref))
  (train,) = metrics.read(str(tmp_path / "ppo"), "train")
  assert train["step"] == 2
  assert train["kl_coef"] == pytest.approx(0.001 * (0.8 + 0.8**2) / 2, rel=1e-5)


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


def test_ppo_with_the_value_a_head_on_the_policys_trunk(runs, tmp_path):
  """``config.ppo.value_init="shared"`` in the stage: the first rollout's values come from the
  zero head on π0's trunk, so they explain none of the returns (explained variance exactly 0,
  where the PM-initialised value of the pipeline's own run does not give 0); after one update
  the head has learned (≠ 0)."""
  from hh.ppo import train as ppo_stage
  from hh.train import metrics
  ref = runs["ref"]
  config = small_pipeline_config(runs["tokenizer"], all_stages=True)
  config.ppo.update(dict(value_init="shared", logp_sets=(), eval_max_prompts=4))
  config.ppo.loop.update(dict(steps=2, eval_every=2))
  ppo_stage.run(config, str(tmp_path / "ppo"), str(ref / "cd"), str(ref / "pm"), str(ref))
  first, second = metrics.read(str(tmp_path / "ppo"), "train")
  print("explained variance:", first["value_explained_variance"],
        second["value_explained_variance"])
  assert first["value_explained_variance"] == 0.0
  assert abs(second["value_explained_variance"]) > 1e-4
  own = metrics.read(str(ref / "ppo"), "train")[0]
  assert abs(own["value_explained_variance"]) > 1e-4
