"""Language-model pretraining (the first stage of both paths in Bai et al. 2022 Fig. 2).

  python -m hh.main --config=configs/lm.py:size=tiny --workdir=runs/lm_tiny

trains a ~0.9M-parameter LM on WikiText-2 with a tokenizer trained on it, on 2 CPU cores in a few
minutes; expected: validation loss ≈ 4.2 nats/token after 400 steps, against a unigram entropy
of the tokenised text of ≈ 6.1 (both printed). Paper sizes (``size=13M`` … ``size=52B``) switch
to bf16 compute, full remat and 2048-token sequences; ``python -m hh.plan`` says what fits where.

Every default lives here or in configs/common.py with a comment; override any key from the
command line, e.g. ``--config.lm.loop.steps=50 --config.mesh.fsdp=4`` (the config is locked: a
misspelt key is an error).
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common


def stage(size: str, datasets=(("wikitext2", 1.0),)) -> ml_collections.ConfigDict:
  """``config.lm``: the LM stage's data, optimizer and loop."""
  big = common.paper_scale(size)
  return ml_collections.ConfigDict(dict(
      data=ml_collections.ConfigDict(dict(
          # (spec, loss weight): "wikitext2" (config.data_dirs.wikitext) and/or "hh_sim/lm"
          # (the world's dialogues, both splits); hh/sources.py resolves them.
          datasets=tuple(datasets),
          wikitext_files=("valid.txt", "test.txt"),  # read and split into articles
          val_every=10,          # every 10th document is held out for validation
          seq_len=2048 if big else 128,  # tokens per training sequence
          batch_size=64 if big else 16,  # global batch (sequences), split over data×fsdp
          eval_batches=8,        # validation batches per evaluation (a fixed set)
      )),
      optim=common.optim(common.pretrain_lr(size), warmup_steps=2000 if big else 30,
                         schedule="cosine"),
      loop=common.loop(log_every=20, eval_every=100, ckpt_every=100,
                       steps=100_000 if big else 400),
      # a workdir of another run whose latest params start this one (optimizer fresh)
      init_from=config_dict.placeholder(str),
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, size="tiny")
  config = common.base(arg.size)
  config.stage = "lm"       # which registered stage hh.main runs (hh/stages.py)
  config.lm = stage(arg.size)
  return config
