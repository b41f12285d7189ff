"""The default end-to-end job on the synthetic HH world (the README's main command).

  python -m hh.main --config=configs/pipeline.py:size=tiny --workdir=runs/pipeline

Stages, each skipped when its outputs exist in the workdir (so a rerun resumes):
  world   build the world's datasets (TFDS) and measure it         → tfds/, world/summary.json
  lm      tokenizer + LM pretraining on the world's dialogues       → lm/
  pm      PMP on the world's binarized pairs, finetuning on the
          helpful + harmless comparisons, evaluation                → pm/
  report  markdown + PNG figures of what was done and measured       → report/report.md

The config composes the stages' own sub-configs (configs/lm.py, configs/pm.py); inside the
pipeline each stage starts from the previous one (``init_from`` None) and reads the world built
in the same workdir (``data_dirs.world`` None). Expected for tiny: LM validation loss ≈ 0.40
nats/token; PM helpful accuracy ≈ 0.70 (≈ 94% of the Bayes ceiling 0.740), harmless ≈ 0.78
(README, "The two commands", with the spread over seeds).
"""
from __future__ import annotations

from configs import common, lm, pm


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, size="tiny", pmp=True)
  config = common.base(arg.size)
  config.stage = "pipeline"
  config.stages = ("world", "lm", "pm", "report")  # in order; a finished stage is skipped
  # The LM reads the world's dialogues (and its reference texts).
  config.lm = lm.stage(arg.size, datasets=(("hh_sim/lm", 1.0),))
  if not common.paper_scale(arg.size):
    # ~3.4 epochs of the world's 10k training dialogues: enough for a tiny LM to memorise most of
    # the popular facts and to anticipate the Human's reactions, which the PM reads (SPEC §2.1;
    # docs/history.md for 1,200 steps).
    config.lm.loop.steps = 2400
    config.tokenizer.vocab_size = 2048  # the world's text has < 2,900 distinct pieces
  # PMP included as in the paper (SPEC §2.3; pmp=False skips it).
  config.pm = pm.stage(arg.size, "sim", arg.pmp)
  return config
