"""The default end-to-end job on the synthetic HH world (the README's main command).

  python -m hh.main --config=configs/pipeline.py:size=tiny --workdir=runs/pipeline

Stages, each skipped when its outputs exist in the workdir (so a rerun resumes):
  world   build the world's datasets (TFDS) and measure it         → tfds/, world/summary.json
  lm      tokenizer + LM pretraining on the world's dialogues       → lm/
  pm      PMP on the world's binarized pairs, finetuning on the
          helpful + harmless comparisons, evaluation                → pm/
  cd      context distillation of the HHH prompt: π0                → cd/
  ppo     π0 trained by PPO against the PM (r_PM − λ_KL·KL)          → ppo/ (policy/)
  policies  the LM, the LM + HHH prompt, π0, the PPO policy and
          best-of-N of π0 on held-out prompts, gold scores, gold Elo → policies/
  report  markdown + PNG figures of what was done and measured       → report/report.md

The config composes the stages' own sub-configs (configs/lm.py, configs/pm.py); inside the
pipeline each stage starts from the previous one (``init_from`` None) and reads the world built
in the same workdir (``data_dirs.world`` None). Expected for tiny: LM validation loss ≈ 0.40
nats/token; PM helpful accuracy ≈ 0.70 (≈ 94% of the Bayes ceiling 0.740), harmless ≈ 0.78
(README, "The two commands", with the spread over seeds).
"""
from __future__ import annotations

from configs import cd, common, lm, pm, policy, ppo


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, size="tiny", pmp=True)
  config = common.base(arg.size)
  config.stage = "pipeline"
  # in order; a finished stage is skipped
  config.stages = ("world", "lm", "pm", "cd", "ppo", "policies", "report")
  # The LM reads the world's dialogues (and its reference texts).
  config.lm = lm.stage(arg.size, datasets=(("hh_sim/lm", 1.0),))
  if not common.paper_scale(arg.size):
    # ~3.4 epochs of the world's 10k training dialogues: enough for a tiny LM to memorise most of
    # the popular facts and to anticipate the Human's reactions, which the PM reads (Bai et al. 2022, App. A.2;
    # docs/history.md for 1,200 steps).
    config.lm.loop.steps = 2400
    config.tokenizer.vocab_size = 2048  # the world's text has < 2,900 distinct pieces
  # PMP included as in the paper (Askell et al. 2021, PMP; pmp=False skips it).
  config.pm = pm.stage(arg.size, "sim", arg.pmp)
  # π0: the LM with the world's HHH prompt distilled in (Bai et al. 2022, App. A.1), on the LM's dialogues.
  config.cd = cd.stage(arg.size, datasets=(("hh_sim/lm", 1.0),))
  # The base LM, the base LM with the prompt, π0 and best-of-N of π0 under the PM, on held-out
  # prompts against the gold annotator.
  config.sampling = policy.sampling(arg.size)
  # π0 → PPO against the PM (Bai et al. 2022, §4.1), its final policy evaluated with the others.
  config.ppo = ppo.stage(arg.size)
  config.policies = policy.evaluation(arg.size)
  if not common.paper_scale(arg.size):
    # What fits the main command's 20 minutes on 2 CPU cores (docs/history.md): 36 PPO
    # iterations evaluated at the end, best-of-N up to 16 on 40 prompts (N = 64 and more
    # prompts: experiments/fig36_best_of_n.py).
    config.ppo.loop.steps = 36
    config.ppo.loop.eval_every = 36
    config.policies.best_of = (1, 4, 16)
    config.policies.best_of_prompts = 40
  return config
