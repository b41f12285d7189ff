"""The default end-to-end job on the synthetic HH world (the README's main command).

  python -m hh.main --config=configs/pipeline.py:size=tiny --workdir=runs/pipeline

Stages, each skipped when its outputs exist in the workdir (so a rerun resumes):
  world   build the world's datasets (TFDS) and measure it   → tfds/, world/summary.json
  lm      tokenizer + LM pretraining on world dialogues + WikiText-2 → lm/
  report  markdown + PNG figures of what was done and measured → report/report.md

Expected on 2 CPU cores (size=tiny): a few minutes in all; the report shows a sample
conversation, the tranche sizes, the Bayes ceilings and the LM's loss against the unigram entropy.
"""
from __future__ import annotations

from configs import common, lm, world


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, size="tiny")
  config = lm.get_config(f"size={arg.size}")
  config.stage = "pipeline"
  config.stages = ("world", "lm", "report")  # run in this order; a finished stage is skipped
  config.world = world.get_world_config()
  config.data.sources = ("sim", "wikitext2")  # the LM reads world dialogues and WikiText-2
  return config
