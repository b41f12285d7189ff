"""Preference-model training: PMP then finetuning on comparisons (SPEC §2.3, §2.4).

  # on the synthetic world built by configs/pipeline.py in runs/pipeline:
  python -m hh.main --config=configs/pm.py:size=tiny,data=sim --workdir=runs/pm \\
      --config.world_workdir=runs/pipeline --config.init_from=runs/pipeline/lm
  # on real hh-rlhf comparisons (the shipped harmless-base rows):
  python -m hh.main --config=configs/pm.py:size=tiny,data=hh_rlhf --workdir=runs/pm_real \\
      --config.init_from=runs/lm_tiny

The paper's settings are the defaults: PMP at 0.1× the LM-pretraining LR, finetuning at 0.01×
with a constant LR, one epoch each, context 1024. CPU sizes finetune at 0.03× (commented below):
a few hundred steps of a tiny model learn too little at 0.01×.
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common, lm, sizes, world


def phase(lr_factor: float, schedule: str, datasets: tuple, seq_len: int, batch_pairs: int,
          eval_every: int) -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(dict(
      lr_factor=lr_factor,      # × config.optim.lr (the LM-pretraining LR)
      schedule=schedule,        # constant | cosine | linear (after warmup)
      warmup_steps=10,
      epochs=1,                 # single epoch: the learning curve is the data-scaling curve
      datasets=datasets,        # "name/config[:split]" (see hh/pm/train.py)
      seq_len=seq_len,          # context + response + EOC, context cut from the left
      batch_pairs=batch_pairs,  # comparisons per step (2× sequences through the trunk)
      max_pairs=config_dict.placeholder(int),  # use only the first N comparisons (data scaling)
      eval_every=eval_every,    # evaluate on the test comparisons every N steps (learning curve)
      eval_at=(2, 4, 8, 16, 32, 64, 128),  # and at these steps: a log-spaced curve
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, size="tiny", data="sim", pmp=True)
  if arg.data not in ("sim", "hh_rlhf"):
    raise ValueError(f"config argument data={arg.data!r}; allowed: sim, hh_rlhf")
  paper_scale = arg.size not in sizes.CPU_SIZES
  config = lm.get_config(f"size={arg.size}")
  config.stage = "pm"
  config.world = world.get_world_config()  # used when datasets name hh_sim
  config.world_workdir = config_dict.placeholder(str)  # where hh_sim was built (the pipeline)
  config.hh_rlhf_dir = str(common.SHARED_DATA / "hh-rlhf")  # official layout (source_dir)
  seq = 1024 if paper_scale else 128
  batch = 32 if paper_scale else 16
  if arg.data == "sim":
    pmp_sets = ("hh_sim/pmp:train",)
    ft_sets = ("hh_sim/helpful:train", "hh_sim/harmless:train")
    test_sets = ("hh_sim/helpful:test", "hh_sim/harmless:test")
  else:  # the shipped 1,900 harmless-base rows: 90% train / 10% test by index
    pmp_sets = ()
    ft_sets = ("hh_rlhf/harmless-base:test[:90%]",)
    test_sets = ("hh_rlhf/harmless-base:test[90%:]",)
  # PMP at the paper's 0.1× for every size. At 0.3× the tiny PM forgot what its LM knew (on the
  # world, before hh_sim 1.2.0: helpful 0.644 at the end of finetuning, against 0.701 after PMP at
  # 0.1× and 0.699 without PMP; HH mix after 32 comparisons 0.626 at 0.3×, 0.705 at 0.1×, 0.678
  # at 0.03×, 0.641 without).
  # Finetuning on CPU sizes at 0.03× (paper 0.01×), chosen by measurement (tiny, helpful test
  # accuracy at the end of finetuning without PMP, measured before the weight-decay fix f0a0248:
  # 0.3× → 0.625, 0.1× → 0.625, 0.03× → 0.665, 0.01× → 0.639; larger factors make the test
  # accuracy jump ±0.03 between evaluations).
  config.pmp = phase(0.1, "cosine", pmp_sets if arg.pmp else (), seq, batch, 100)
  config.finetune = phase(0.01 if paper_scale else 0.03, "constant", ft_sets, seq, batch, 100)
  # After PMP, start finetuning from a zero head: PMP trains the head on tagged samples
  # ("… [GOOD]"), and its reading of untagged ones is arbitrary (measured on the world at the end
  # of PMP, hh_sim 1.2.0: 0.55 on helpful pairs, 0.28 on harmless ones). The trunk keeps what PMP
  # taught.
  config.finetune.reset_head = True
  config.test_datasets = test_sets
  config.harmless_weight = 1.0  # λ in L_helpful + λ·L_harmless (SPEC §2.4; λ = 1 default)
  config.train.log_every = 10
  config.train.ckpt_every = 100
  config.init_from = config_dict.placeholder(str)  # the pretrained LM's workdir (trunk only)
  # The EOC token is new to the LM: start its embedding as a copy of the "\n\nHuman:" marker's
  # (what follows an Assistant response in pretraining), so at EOC the trunk already computes what
  # it anticipates of the Human's next turn — approval or "That's not right." — for the head to
  # read. "random" keeps the LM's untrained EOC row. hh/pm/train.py:eoc_from_marker.
  config.eoc_init = "human_marker"
  return config
