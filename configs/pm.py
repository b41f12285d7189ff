"""Preference-model training: PMP then finetuning on comparisons (Askell et al. 2021, PMP, §2.4).

  # on the synthetic world built by configs/pipeline.py in runs/pipeline:
  python -m hh.main --config=configs/pm.py:size=tiny,data=sim --workdir=runs/pm \\
      --config.data_dirs.world=runs/pipeline --config.pm.init_from=runs/pipeline/lm
  # on real hh-rlhf comparisons (the shipped harmless-base rows), from configs/lm.py's LM:
  python -m hh.main --config=configs/pm.py:size=tiny,data=hh_rlhf --workdir=runs/pm_real \\
      --config.pm.init_from=runs/lm_tiny

Expected: on the world, helpful test accuracy ≈ 0.70 (≈ 94% of the annotator's Bayes ceiling
0.740) and harmless ≈ 0.78 for tiny (README, "The two commands"); on the real rows 0.53–0.61 on
the 190 held-out pairs depending on the LM, against 0.53 for "prefer the shorter response".

The paper's settings are the defaults: PMP at 0.1× the LM-pretraining LR, finetuning at 0.01×
with a constant LR, one epoch each, context 1024. Config arguments: ``size``, ``data`` (sim |
hh_rlhf), ``pmp`` (True | False), ``harmless_weight`` (λ of Bai et al. 2022, §3.1, App. A.2, the loss weight of the
harmless comparisons).
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common


def phase(lr: float, schedule: str, datasets: tuple, seq_len: int, batch_pairs: int,
          eval_every: int) -> ml_collections.ConfigDict:
  """One PM phase (PMP or finetuning): one epoch over ``datasets``."""
  return ml_collections.ConfigDict(dict(
      # ("name/config[:split]", loss weight): hh_sim/... (config.data_dirs.world),
      # hh_rlhf/... (config.data_dirs.hh_rlhf); hh/sources.py resolves them.
      datasets=tuple(datasets),
      epochs=1,                 # single epoch: the learning curve is the data-scaling curve
      seq_len=seq_len,          # context + response + EOC, context cut from the left
      batch_pairs=batch_pairs,  # comparisons per step (2× sequences through the trunk)
      max_pairs=config_dict.placeholder(int),  # use only N comparisons, spread evenly (ablations)
      optim=common.optim(lr, warmup_steps=10, schedule=schedule),
      # evaluate on the test comparisons every N steps and at log-spaced steps (learning curve)
      loop=common.loop(log_every=10, eval_every=eval_every, ckpt_every=100,
                       eval_at=(2, 4, 8, 16, 32, 64, 128)),
  ))


def stage(size: str, data: str = "sim", pmp: bool = True,
          harmless_weight: float = 1.0) -> ml_collections.ConfigDict:
  """``config.pm``: PMP and finetuning phases, test sets, initialisation."""
  if data not in ("sim", "hh_rlhf"):
    raise ValueError(f"config argument data={data!r}; allowed: sim, hh_rlhf")
  big = common.paper_scale(size)
  seq, batch = (1024, 32) if big else (128, 16)
  lam = harmless_weight  # λ in L_helpful + λ·L_harmless (Bai et al. 2022, §3.1, App. A.2; λ = 1 default)
  if data == "sim":
    pmp_sets = (("hh_sim/pmp:train", 1.0),)
    ft_sets = (("hh_sim/helpful:train", 1.0), ("hh_sim/harmless:train", lam))
    test_sets = ("hh_sim/helpful:test", "hh_sim/harmless:test")
  else:  # the shipped 1,900 harmless-base rows: 90% train / 10% test by index
    pmp_sets = ()
    ft_sets = (("hh_rlhf/harmless-base:test[:90%]", lam),)
    test_sets = ("hh_rlhf/harmless-base:test[90%:]",)
  lr = common.pretrain_lr(size)
  # PMP at the paper's 0.1× for every size (on the world, 0.3× made the tiny PM forget what its
  # LM knew; docs/history.md).
  pmp_lr = 0.1 * lr
  # Finetuning at the paper's 0.01×; CPU sizes at 0.03×, chosen by measurement (docs/history.md:
  # a few hundred steps of a tiny model learn too little at 0.01×).
  ft_lr = (0.01 if big else 0.03) * lr
  config = ml_collections.ConfigDict(dict(
      pmp=phase(pmp_lr, "cosine", pmp_sets if pmp else (), seq, batch, 100),
      finetune=phase(ft_lr, "constant", ft_sets, seq, batch, 100),
      test_datasets=test_sets,  # evaluated during and after training
      # the pretrained LM's workdir: its latest params start the trunk, its tokenizer is used
      init_from=config_dict.placeholder(str),
      # a PM workdir's finished PMP phase (``<pm>/pmp``) to finetune from, PMP skipped (its
      # datasets must be empty): the online loop's PMs share one PMP, as in the paper
      pmp_from=config_dict.placeholder(str),
      # The EOC token is new to the LM: start its embedding as a copy of the "\n\nHuman:"
      # marker's (what follows an Assistant response in pretraining), so at EOC the trunk
      # already computes what it anticipates of the Human's next turn for the head to read.
      # human_marker | random (keeps the LM's untrained EOC row).
      eoc_init="human_marker",
  ))
  # After PMP, start finetuning from a zero head: PMP trains the head on tagged samples
  # ("… [GOOD]"), and its reading of untagged ones is arbitrary. The trunk keeps what PMP taught.
  config.finetune.reset_head = True
  return config


def real_halves(data_dir: str | None) -> tuple[list[str], list[str], str]:
  """hh-rlhf's comparisons in two halves, for a PM and a held-out test PM: for each preference
  subset present in ``data_dir`` (the official layout), the first and second half of its train
  split, or of its test split when only that is there (the shipped harmless-base rows) → (first
  specs, second specs, the split halved). ``data_dir`` None: helpful-base and harmless-base's
  train splits, which the builder downloads (untested here: no network to the files)."""
  import os
  if data_dir is None:  # the official files, downloaded by the builder (needs a network)
    return ([f"hh_rlhf/{s}:train[:50%]" for s in ("helpful-base", "harmless-base")],
            [f"hh_rlhf/{s}:train[50%:]" for s in ("helpful-base", "harmless-base")], "train")
  present = [s for s in ("helpful-base", "harmless-base")
             if os.path.isdir(os.path.join(data_dir, s))]
  if not present:
    raise ValueError(f"config.data_dirs.hh_rlhf={data_dir!r} has no helpful-base or harmless-base "
                     "folder (the official layout); allowed: a folder laid out as "
                     "github.com/anthropics/hh-rlhf")
  split = ("train" if all(os.path.exists(os.path.join(data_dir, s, "train.jsonl.gz"))
                          for s in present) else "test")
  return ([f"hh_rlhf/{s}:{split}[:50%]" for s in present],
          [f"hh_rlhf/{s}:{split}[50%:]" for s in present], split)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, size="tiny", data="sim", pmp=True, harmless_weight=1.0)
  config = common.base(arg.size)
  config.stage = "pm"
  config.pm = stage(arg.size, arg.data, arg.pmp, arg.harmless_weight)
  return config
