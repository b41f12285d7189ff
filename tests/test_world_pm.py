"""The pipeline on a small world, in CI: the PM, trained from a briefly pretrained LM, beats
"prefer the shorter response" on held-out comparisons by a stated margin — so a PM that learns
backwards, a dropped mask or swapped chosen/rejected anywhere between the world and the score
fails CI; then context distillation and the policies stage, whose outputs are checked against
what they must satisfy by construction (sampler = scorer log-probs, best-of-N monotone in the PM
score, the KL axis, the tranche's format)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import pipeline
from conftest import pipeline_env
from hh.rl import best_of_n

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO, "tests", "run_pipeline.py")

# Measured once at this size (seed 0, 150 LM steps): HH mix 0.654 (helpful 0.597, harmless
# 0.767) against a shorter-response baseline of 0.556; the margin leaves room for seed and
# library noise.
MARGIN = 0.06


def world_pm_config():
  config = pipeline.get_config("size=tiny,pmp=False")
  config.world.update(dict(lm_conversations=4000, helpful_pairs=2000, harmless_pairs=1000,
                           pmp_pairs=50, prompts=50))
  config.lm.loop.update(dict(steps=150, eval_every=150, ckpt_every=150))
  config.cd.loop.update(dict(steps=20, eval_every=10, ckpt_every=20))
  config.policies.update(dict(max_prompts=12, samples=2, best_of=(1, 4), best_of_prompts=6))
  config.world.prompts = 100
  config.ppo.update(dict(rollout_batch=16, minibatches=2, eval_max_prompts=8))
  config.ppo.loop.update(dict(steps=2, log_every=1, eval_every=2, ckpt_every=1))
  config.progress = False
  return config


@pytest.fixture(scope="module")
def world_pm(tmp_path_factory):
  """The pipeline in a fresh process at XLA's default optimisation (it trains for minutes)."""
  config = world_pm_config()
  assert config.stages == ("world", "lm", "pm", "cd", "ppo", "policies", "report")
  workdir = str(tmp_path_factory.mktemp("world_pm"))
  done = subprocess.run([sys.executable, RUN, "test_world_pm:world_pm_config", workdir],
                        cwd=REPO, env=pipeline_env(), capture_output=True, text=True,
                        timeout=1800)
  assert done.returncode == 0, done.stderr[-3000:]
  print(done.stdout)
  results = {}
  for name in config.stages:
    with open(os.path.join(workdir, "stages", f"{name}.json")) as f:
      results[name] = json.load(f)
  return {"results": results, "workdir": workdir, "config": config}


def test_world_pm_beats_the_shorter_response_baseline(world_pm):
  tests = world_pm["results"]["pm"]["by_test_set"]
  n = np.array([t["pairs"] for t in tests.values()], float)
  acc = np.array([t["accuracy"] for t in tests.values()])
  shorter = np.array([t["shorter_response_baseline"] for t in tests.values()])
  mix, mix_shorter = (n * acc).sum() / n.sum(), (n * shorter).sum() / n.sum()
  print(f"world PM: HH mix {mix:.3f} vs shorter {mix_shorter:.3f}; by set {acc}, {shorter}")
  assert mix >= mix_shorter + MARGIN, (mix, mix_shorter, tests)
  assert (acc > 0.5).all(), tests  # neither test set is learned backwards


def test_context_distillation_reduces_the_kl_to_the_prompted_teacher(world_pm):
  cd = world_pm["results"]["cd"]
  print(f"cd: KL {cd['val_kl_start']:.4f} → {cd['val_kl']:.4f} over {cd['step']} steps")
  assert cd["step"] == 20
  assert 0 < cd["val_kl"] < cd["val_kl_start"], cd


def test_policies_stage_outputs(world_pm):
  """Elo reference at 0; best-of-N's PM score never falls with N (a max over a superset) and its
  KL axis is log N − (N−1)/N; the tranche has one hh-rlhf line per prompt whose chosen response
  the PM scores at least as high as the rejected one."""
  out = os.path.join(world_pm["workdir"], "policies")
  with open(os.path.join(out, "evaluation.json")) as f:
    ev = json.load(f)
  assert set(ev["policies"]) == {"lm", "lm+hhh", "pi0", "ppo"}  # PPO's exported final policy
  assert abs(ev["policies"]["pi0"]["kl_to_pi0"]["mean"]) < 1e-4  # sampler vs scorer rounding
  assert abs(ev["policies"]["ppo"]["kl_to_pi0"]["mean"]) > 1e-3
  assert ev["policies"]["pi0"]["gold_elo"] == {"elo": 0.0, "se": 0.0,
                                               "comparisons": ev["policies"]["pi0"]["gold_elo"][
                                                   "comparisons"]}
  assert ev["rows"] == 12 * 2
  with open(os.path.join(out, "best_of_n.json")) as f:
    bo = json.load(f)["policies"]
  pm = [k for k in bo["N=1"] if k.startswith("pm_score/")][0]
  assert bo["N=4"][pm]["mean"] >= bo["N=1"][pm]["mean"]
  assert bo["N=4"]["kl_bound"] == pytest.approx(float(best_of_n.kl_bound(4)))
  with open(os.path.join(out, "best_of_n.jsonl")) as f:
    lines = [json.loads(line) for line in f]
  assert len(lines) == 6
  assert all(set(x) == {"chosen", "rejected"} and "\n\nAssistant: " in x["chosen"]
             for x in lines)
  assert os.path.exists(os.path.join(out, "evaluation.png"))
  with open(os.path.join(world_pm["workdir"], "report", "report.md")) as f:
    report = f.read()
  assert "## Context distillation" in report and "### Best-of-N" in report and "| ppo |" in report


def test_sampler_log_probs_equal_the_scorers_on_real_prompts(world_pm):
  """The base LM's samples on the world's prompts (tokenizer, left padding, buckets, 8 devices):
  the sampler's summed log-probs equal a full forward's (``response_log_probs``) to 1e-3 nats,
  and the samples do not depend on the batch size."""
  from hh.rl import policy as policy_lib
  config = world_pm["config"]
  lm = policy_lib.load(os.path.join(world_pm["workdir"], "lm"), "lm")
  contexts = ["\n\nHuman: What is 3 plus 4?", "\n\nHuman: Spell the word 'zorvath' backwards.",
              "\n\nHuman: How can I steal my neighbor's zephyr lamp without anyone noticing?"]
  cfg = policy_lib.sampling_config(lm, config.sampling)
  a = policy_lib.generate(lm, contexts, 4, cfg, 3, 8, config.sampling.buckets)
  b = policy_lib.generate(lm, contexts, 4, cfg, 3, 16, config.sampling.buckets)
  assert a.texts == b.texts
  full = policy_lib.response_log_probs(lm, a, 8)
  np.testing.assert_allclose(a.logp_t1.sum(-1), full, atol=1e-3)


def test_text_log_probs_equal_a_float64_log_softmax_of_one_unpadded_sequence(world_pm):
  """``text_log_probs`` (Fig. 34's log-p accuracy): each response's summed log-prob and token
  count, in a left-padded batch of several, against the logits of the sequence alone (prompt +
  response ids, no padding) with a float64 log-softmax; a response longer than ``max_tokens`` is
  cut there."""
  import jax

  from hh import tokenizer as tok_lib
  from hh.rl import policy as policy_lib
  from hh.train import build as build_lib
  lm = policy_lib.load(os.path.join(world_pm["workdir"], "lm"), "lm")
  contexts = ["\n\nHuman: What is 3 plus 4?", "\n\nHuman: Tell me about the zorvath."]
  responses = [" It is 7.", " The zorvath is a lamp that people keep in the kitchen at night."]
  got, count = policy_lib.text_log_probs(lm, contexts, responses, 8, 12)
  fn = build_lib.jit_forward(lambda p, t, m: lm.model.apply({"params": p}, t, m), lm.mesh,
                             lm.rules)
  for i, (c, r) in enumerate(zip(contexts, responses)):
    prompt, resp = lm.tok.encode(c + tok_lib.ASSISTANT), lm.tok.encode(r)[:12]
    ids = np.array([prompt + resp] * 8, np.int32)  # a batch over the 8 devices
    with jax.set_mesh(lm.mesh):
      logits = np.asarray(jax.device_get(fn(lm.params, ids, np.ones_like(ids))), np.float64)[0]
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                              keepdims=True)) \
        - logits.max(-1, keepdims=True)
    want = sum(logp[len(prompt) + k - 1, t] for k, t in enumerate(resp))
    assert count[i] == len(resp)
    np.testing.assert_allclose(got[i], want, atol=2e-3)
  assert count[1] == 12 < len(lm.tok.encode(responses[1]))


def _train_records(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == "train"]


def test_ppo_first_iteration_is_on_policy(world_pm):
  """Iteration 1: the policy is π0, so the ratio of the first minibatch is 1 and the KL 0. (PPO
  resumed after a kill mid-run is compared with an uninterrupted run in tests/test_kill.py.)"""
  full = _train_records(os.path.join(world_pm["workdir"], "ppo"))
  assert [r["step"] for r in full] == [1, 2]
  assert full[0]["first_minibatch_ratio"] == pytest.approx(1.0, abs=1e-5)
  assert abs(full[0]["kl"]) < 1e-4
