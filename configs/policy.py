"""Sampling and policy evaluation: ``config.sampling`` and ``config.policies`` (Bai et al. 2022, eq. 2.1, §4.3).

  python -m hh.main --config=configs/policy.py --workdir=runs/eval \
      --config.data_dirs.world=runs/pipeline --config.policies.pm=runs/pipeline/pm \
      --config.policies.lm=runs/pipeline/lm --config.policies.pi0=runs/pipeline/cd \
      --config.policies.ppo=runs/pipeline/ppo

Inside the pipeline the ``policies`` stage evaluates the base LM, the base LM with the HHH prompt,
π0 (the ``cd`` stage) and best-of-N of π0 under the pipeline's PM.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common


def sampling(size: str) -> ml_collections.ConfigDict:
  """How every policy samples (hh/policy/sample.py); one compiled program per (bucket, batch)."""
  big = common.paper_scale(size)
  return ml_collections.ConfigDict(dict(
      max_new_tokens=256 if big else 48,  # a response's length cap (the world's answers are short)
      temperature=1.0,     # 0: greedy
      top_k=0,             # 0: off
      top_p=1.0,           # 1: off
      # prompt lengths are padded to the smallest bucket that holds them; a longer prompt is an
      # error, not silently cut
      buckets=(128, 256, 512, 1024, 2048) if big else (64, 128, 256, 512),
      batch_size=64,       # rows per sampler call
      # the KV cache grows by this many slots at a time, so a decode step attends over the
      # filled cache rounded up to it rather than all max_new_tokens; 0: the whole cache
      cache_block=64,
  ))


def evaluation(size: str) -> ml_collections.ConfigDict:
  """``config.policies``: the held-out prompts, samples per prompt, best-of-N and the Elo."""
  del size
  return ml_collections.ConfigDict(dict(
      prompts="hh_sim/prompts:test",  # held-out RL prompts (helpful, harmful and borderline)
      max_prompts=120,     # the first this many (the split is in random order)
      prompt_max_chars=config_dict.placeholder(int),  # only prompts this short (None: all)
      samples=4,           # samples per prompt for each policy's metrics
      best_of=(1, 4, 16, 64),  # N for best-of-N of π0 under the PM (Bai et al. 2022, §4.3)
      best_of_prompts=60,  # prompts (the first of the evaluation's) for best-of-N
      # the PM: None inside a pipeline (its own pm stage); scored on text, re-tokenised by the
      # PM's tokenizer; text_scoring=False scores the policy's own tokens, which needs the PM
      # and the policy to share a tokenizer
      pm=config_dict.placeholder(str),
      # a held-out PM that also scores every sample (None inside a pipeline: its own test_pm
      # stage, when config.stages has one)
      test_pm=config_dict.placeholder(str),
      text_scoring=True,
      reference="pi0",     # the Elo reference (0 Elo): lm, lm+hhh or pi0
      seed=0,              # sampling and the annotator's choices
      # the workdirs; None inside a pipeline: its own lm and cd stages
      lm=config_dict.placeholder(str),
      pi0=config_dict.placeholder(str),
      # a PPO workdir whose final policy is evaluated beside the others; None inside a
      # pipeline: its own ppo stage, when config.stages has one
      ppo=config_dict.placeholder(str),
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The ``policies`` stage alone: name the LM, π0 and PM workdirs and the world."""
  arg = common.parse_arg(arg, size="tiny")
  config = common.base(arg.size)
  config.stage = "policies"
  config.sampling = sampling(arg.size)
  config.policies = evaluation(arg.size)
  config.cd = ml_collections.ConfigDict(dict(prompt="hh_sim/hhh"))  # the prompted policy's prefix
  return config
