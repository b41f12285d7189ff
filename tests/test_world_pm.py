"""The pipeline on a small world, in CI: the PM, trained from a briefly pretrained LM, beats
"prefer the shorter response" on held-out comparisons by a stated margin — so a PM that learns
backwards, a dropped mask or swapped chosen/rejected anywhere between the world and the score
fails CI; the sampler and the scorer agree on its LM's samples of the world's prompts. (The
policy stages' outputs — context distillation, PPO, policy evaluation, best-of-N — are checked on
the all-stages pipeline of tests/test_kill.py, which runs them anyway.)"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from configs import pipeline
from conftest import pipeline_env

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
  # the PM is evaluated once, at its end (the pipeline's default also evaluates at steps 2, 4,
  # …, 128 for its learning curve: a third of this stage's time here)
  config.pm.finetune.loop.update(dict(eval_at=(), eval_every=1000, ckpt_every=1000))
  config.world.prompts = 100
  config.stages = ("world", "lm", "pm", "report")
  config.progress = False
  return config


@pytest.fixture(scope="module")
def world_pm(tmp_path_factory):
  """The pipeline in a fresh process at XLA's default optimisation (it trains for minutes)."""
  config = world_pm_config()
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


def test_sampler_log_probs_equal_the_scorers_on_real_prompts(world_pm):
  """The base LM's samples on the world's prompts (tokenizer, left padding, buckets, 8 devices):
  the sampler's summed log-probs equal a full forward's (``response_log_probs``) to 1e-3 nats,
  and the samples do not depend on the batch size."""
  from hh.policy import policy as policy_lib
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
  from hh.policy import policy as policy_lib
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
