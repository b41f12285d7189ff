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

import ml_collections

from configs import cd, common, lm, pm, policy, ppo


def get_config(arg: str | None = None):
  arg = common.parse_arg(arg, size="tiny", pmp=True, data="sim", lm="")
  if arg.data == "hh_rlhf":
    return hh_rlhf(arg.lm or arg.size, bool(arg.lm))
  if arg.data != "sim" or arg.lm:
    raise ValueError(f"config arguments data={arg.data!r}, lm={arg.lm!r}; allowed: data=sim, "
                     "or data=hh_rlhf with an optional lm=<model directory>")
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


def hh_rlhf(size: str, imported: bool) -> ml_collections.ConfigDict:
  """RLHF on real hh-rlhf comparisons (``data=hh_rlhf``), no world and no gold annotator:

  lm        LM pretraining on WikiText-2 (skipped with ``lm=DIR``: an imported or Hugging Face
            checkpoint, which is then the model: its size, tokenizer and params)
  pm        the PM on the first half of the comparisons (each subset present in
            config.data_dirs.hh_rlhf), evaluated on the second
  test_pm   a held-out PM on the second half (evaluated on the first): never seen by PPO
  cd        π0: the LM with the HHH prompt of configs/prompts/hhh.txt distilled in
  ppo       π0 → PPO against the PM on the first half's prompts; the test PM scores it
  policies  the LM, the LM + prompt, π0, PPO and best-of-N of π0 on the second half's prompts:
            the scores under both PMs, PM-predicted Elo and win rates against π0 (the paper's
            evaluation without crowdworkers, Bai et al. 2022, §4.2), samples.jsonl to read

  The helpful and harmful shares of PPO's prompts follow the subsets present (harmless-base
  alone: all harmful).
  """
  config = common.base(size)
  config.stage = "pipeline"
  config.stages = tuple(s for s in ("lm", "pm", "test_pm", "cd", "ppo", "policies", "report")
                        if not (imported and s == "lm"))
  first, second, _ = pm.real_halves(config.data_dirs.hh_rlhf)
  small = not common.paper_scale(size)
  config.lm = lm.stage(size, datasets=(("wikitext2", 1.0),))
  if small:
    config.lm.data.seq_len = 256  # hh-rlhf's conversations are longer than the world's
    config.lm.loop.steps = 600
  config.pm = pm.stage(size, "hh_rlhf", pmp=False)
  config.pm.finetune.datasets = tuple((s, 1.0) for s in first)
  config.pm.test_datasets = tuple(second)
  config.test_pm = pm.stage(size, "hh_rlhf", pmp=False)
  config.test_pm.finetune.datasets = tuple((s, 1.0) for s in second)
  config.test_pm.test_datasets = tuple(first)
  for block in (config.pm, config.test_pm):
    block.finetune.seq_len = 256 if small else block.finetune.seq_len
  config.cd = cd.stage(size, datasets=(("wikitext2", 1.0),))
  config.cd.prompt = str(common.REPO_ROOT / "configs" / "prompts" / "hhh.txt")
  config.cd.data.seq_len = config.lm.data.seq_len
  config.sampling = policy.sampling(size)
  if small:  # the prompted LM's prefix (the HHH prompt) comes before a conversation
    config.sampling.buckets = (128, 256, 512, 1024, 2048)
  config.ppo = ppo.stage(size)
  config.ppo.prompts = "+".join(first)
  config.ppo.eval_prompts = "+".join(second)
  config.ppo.prompt_max_chars = 600  # one or two turns: the prompts fit the sampler's buckets
  kinds = {"harmful" if "harmless" in s else "helpful" for s in first}
  config.ppo.harmful_fraction = {frozenset({"harmful"}): 1.0,
                                 frozenset({"helpful"}): 0.0}.get(frozenset(kinds), 0.5)
  config.policies = policy.evaluation(size)
  config.policies.prompts = "+".join(second)
  config.policies.prompt_max_chars = config.ppo.prompt_max_chars
  if imported:
    config.pm.init_from = config.cd.init_from = config.policies.lm = size
  if small:
    config.ppo.loop.steps = 36
    config.ppo.loop.eval_every = 36
    config.policies.max_prompts = 60
    config.policies.best_of = (1, 4, 16)
    config.policies.best_of_prompts = 40
  return config

