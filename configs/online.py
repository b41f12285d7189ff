"""Iterated online RLHF on the world (Bai et al. 2022, §4.5): the pipeline, then ``config.online.iterations``
iterations of collect → PM from scratch → PPO from π0 (hh/online/loop.py).

  python -m hh.main --config=configs/online.py:size=tiny --workdir=runs/online
  python -m hh.lineage runs/online/online/iter_3/ppo      # what made the last policy

Iteration 1 is the rejection-sampled tranche (best-of-``rs_k`` of π0 under the base PM; the paper
mostly used k = 16), later ones the online tranches of the deployed policies (best-of-``deploy_k``
under the newest PM when it is above 1). ``helpful_only``
makes the paper's online helpful-only run (helpful prompts and comparisons only).
"""
from __future__ import annotations

import ml_collections

from configs import common, pipeline


def stage(size: str) -> ml_collections.ConfigDict:
  """``config.online``: iterations, prompts per iteration, the label source."""
  del size
  return ml_collections.ConfigDict(dict(
      iterations=3,              # 1 rejection-sampled + 2 online (the paper ran ~5 weekly)
      prompts="hh_sim/prompts:train",
      prompts_per_iteration=400,  # one pair per prompt
      rs_k=4,                    # best-of-k in the rejection-sampled tranche (paper: mostly 16)
      deployed=2,                # the last this many iterations' policies share the prompts
      # each deployed response is the best of this many samples under the newest PM: the policy
      # plus rejection sampling; 1 = plain samples (the paper's online deployment)
      deploy_k=1,
      test_every=10,             # every 10th pair is held out as the tranche's test set
      helpful_only=False,        # the paper's online helpful-only run
      # "annotator": the world's annotator; "people": judgements in iter_<i>/labels.jsonl
      # (python -m hh.label serve writes them; the loop stops and waits for them); "pm:<dir>":
      # AI feedback, that PM's preferences; or a folder with iter_<i>.jsonl judgements
      # (hh/online/tranche.py: {"id": ..., "preferred": <text>} or {"id": ..., "unsure": true})
      labels="annotator",
      # with judgements from people: "wait" until every pair is judged, or "drop" the unjudged
      # pairs and go on once any are judged
      unlabelled="wait",
      # Fig. 16's controlled experiment after the iterations: PMs of equal comparison count on
      # base data only and on an even base / RS / online mix, a policy trained on each
      controlled=False,
      # the workdirs; None inside a pipeline: its own lm, pm and cd stages
      lm=ml_collections.config_dict.placeholder(str),
      pm=ml_collections.config_dict.placeholder(str),
      pi0=ml_collections.config_dict.placeholder(str),
      # an exported policy trained on the base PM (static HH RLHF), evaluated beside the loop's;
      # None inside a pipeline with a ppo stage: its policy
      static=ml_collections.config_dict.placeholder(str),
  ))


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, size="tiny", pmp=True)
  config = pipeline.get_config(f"size={arg.size},pmp={arg.pmp}")
  config.stages = ("world", "lm", "pm", "cd", "ppo", "policies", "online", "report")
  config.online = stage(arg.size)
  # Fig. 34 during RL: each PPO evaluation also measures the policy's mean log-p accuracy on the
  # base test comparisons (the final PM's accuracy on them is the figure's reference line)
  config.ppo.logp_sets = ("hh_sim/helpful:test", "hh_sim/harmless:test")
  config.ppo.loop.eval_every = 6  # so at 7 points of each 36-iteration run (not only its ends)
  return config
