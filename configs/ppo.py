"""PPO against the PM (Bai et al. 2022, §4.1): π0 → the RLHF policy.

  python -m hh.main --config=configs/ppo.py --workdir=runs/ppo \
      --config.ppo.init_from=runs/pipeline/cd --config.ppo.pm=runs/pipeline/pm \
      --config.data_dirs.world=runs/pipeline

In a pipeline (``config.stages`` with "ppo" after "cd"), π0 and the PM are the pipeline's own.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common, policy


def stage(size: str) -> ml_collections.ConfigDict:
  """``config.ppo``: prompts, rollout, the PPO hyperparameters, optimizer and loop."""
  big = common.paper_scale(size)
  return ml_collections.ConfigDict(dict(
      prompts="hh_sim/prompts:train",
      harmful_fraction=0.3,   # share of harmful requests per rollout batch (§4.4's (Bai et al. 2022, §4.4) fix: less)
      rollout_batch=512 if big else 64,  # prompts (one response each) per iteration
      max_new_tokens=128 if big else 48,  # the paper samples 32 or 128 tokens
      temperature=1.0,        # log-probs for the ratio and the KL are at this temperature
      epochs=1,               # K passes over a rollout (the paper: 1, 2 or 4)
      minibatches=4,
      kl_coef=0.001,          # λ_KL (Bai et al. 2022, §4.1)
      # the adaptive KL controller (Ziegler et al. 2019): None keeps λ_KL fixed, as the paper
      # does; a number of nats moves λ_KL each iteration towards that mean summed KL
      kl_target=config_dict.placeholder(float),
      kl_horizon=10_000.0,
      eot_penalty=0.0,        # subtracted from the score of a response that did not end its turn
      gamma=1.0,
      lam=0.95,
      clip_eps=0.2,
      vf_clip=0.2,
      # separate models: only scales the value's gradient before clipping; "shared": the value
      # loss's weight in the shared trunk's gradient
      vf_coef=1.0,
      # the value model starts as the PM (Bai et al. 2022, §4.1; the PM must be of the policy's size) or as
      # π0's trunk with a zero head ("policy": a PM of any size, e.g. the largest, Fig. 13);
      # "shared": a zero scalar head on the policy's own trunk (one trunk, half the training FLOPs)
      value_init="pm",
      optim=common.optim(0.01 * common.pretrain_lr(size),  # 0.01× pretraining (Bai et al. 2022, §4.1)
                         warmup_steps=10, schedule="constant"),
      loop=common.loop(log_every=5, eval_every=25, ckpt_every=10, steps=200 if big else 50),
      eval_prompts="hh_sim/prompts:test",
      eval_max_prompts=120,
      # only prompts of at most this many characters (None: all); hh-rlhf's longest
      # conversations run to thousands of tokens
      prompt_max_chars=config_dict.placeholder(int),
      # Fig. 34 during RL: at each evaluation, the fraction of these comparison sets' pairs whose
      # better response has the higher mean per-token log-prob under the policy (none: skipped)
      logp_sets=(),
      logp_max_pairs=300,
      logp_max_tokens=64,     # responses cut to this many tokens
      # PM workdirs that score every rollout beside the training PM, never rewarding it: the
      # train-PM/test-PM robustness study (Bai et al. 2022, §4.2; metrics test_pm_score/<index>)
      test_pms=(),
      init_from=config_dict.placeholder(str),  # π0's workdir (the cd stage)
      pm=config_dict.placeholder(str),         # the PM's workdir
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, size="tiny")
  config = common.base(arg.size)
  config.stage = "ppo"
  config.sampling = policy.sampling(arg.size)
  config.ppo = stage(arg.size)
  return config
