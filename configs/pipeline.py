"""The default end-to-end job on the synthetic HH world (the README's main command).

  python -m hh.main --config=configs/pipeline.py:size=tiny --workdir=runs/pipeline

Stages, each skipped when its outputs exist in the workdir (so a rerun resumes):
  world   build the world's datasets (TFDS) and measure it         → tfds/, world/summary.json
  lm      tokenizer + LM pretraining on the world's dialogues       → lm/
  pm      PMP on the world's binarized pairs, finetuning on the
          helpful + harmless comparisons, evaluation                → pm/
  report  markdown + PNG figures of what was done and measured       → report/report.md

All PM settings are those of configs/pm.py (data=sim), PMP included as in the paper (SPEC §2.3;
``pmp=False`` skips it): on the world it helps the tiny PM while comparisons are few (up to
~3,000) and ends a little lower (HH mix 0.726 against 0.737; experiments/pmp_ablation.py).
"""
from __future__ import annotations

from configs import common, pm, sizes


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, size="tiny", pmp="True")
  if arg.pmp not in ("True", "False"):
    raise ValueError(f"config argument pmp={arg.pmp!r}; allowed: True, False")
  config = pm.get_config(f"size={arg.size},data=sim,pmp={arg.pmp}")
  config.stage = "pipeline"
  config.stages = ("world", "lm", "pm", "report")  # in order; a finished stage is skipped
  config.data.sources = ("sim",)  # the LM reads the world's dialogues (and its reference texts)
  if arg.size in sizes.CPU_SIZES:
    # ~3.4 epochs of the world's 10k training dialogues: enough for a tiny LM to memorise most of
    # the popular facts and to anticipate the Human's reactions, which the PM reads (SPEC §2.1).
    # At 1,200 steps the PM depended on the LM's seed (tiny, helpful: 90.5% of the Bayes ceiling
    # from seed 0, 84.9% from seed 1); at 2,400, 96.1% and 92.8% (93.9% / 94.1% with PMP).
    config.train.steps = 2400
    config.tokenizer.vocab_size = 2048  # the world's text has < 2,900 distinct pieces
  return config
