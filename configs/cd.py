"""Context distillation (Bai et al. 2022, App. A.1): π0, the LM that acts as if the HHH prompt were in its context.

  python -m hh.main --config=configs/cd.py --config.cd.init_from=runs/pipeline/lm \
      --config.data_dirs.world=runs/pipeline --workdir=runs/cd

Inside the pipeline (configs/pipeline.py) the stage starts from the pipeline's own LM and world.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common, lm


def stage(size: str, datasets=(("hh_sim/lm", 1.0),)) -> ml_collections.ConfigDict:
  """``config.cd``: the teacher's prompt, the student's text, optimizer and loop."""
  big = common.paper_scale(size)
  optim = common.optim(0.05 * common.pretrain_lr(size),  # 0.05× pretraining (Bai et al. 2022, App. A.1)
                       warmup_steps=100 if big else 10, schedule="linear")
  optim.end_lr_ratio = 0.0  # linear decay to 0 (Bai et al. 2022, App. A.1)
  return ml_collections.ConfigDict(dict(
      # the teacher's prefix: "hh_sim/hhh" (the world's HHH prompt) or a path to a text file
      prompt="hh_sim/hhh",
      top_k=50,            # the teacher's top-k tokens kept as themselves, + 1 bucket (Bai et al. 2022, App. A.1)
      # the student's text: windows of the LM corpus, as in configs/lm.py
      data=lm.stage(size, datasets).data,
      optim=optim,
      loop=common.loop(log_every=10, eval_every=50, ckpt_every=100,
                       steps=20_000 if big else 150),
      init_from=config_dict.placeholder(str),  # the pretrained LM (teacher and start)
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, size="tiny")
  config = common.base(arg.size)
  config.stage = "cd"
  config.cd = stage(arg.size)
  return config
