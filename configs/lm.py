"""Language-model pretraining (the first stage of both paths in SPEC §7 Fig. 2).

Launch (the README's main command until the HH pipeline replaces it):

  python -m hh.main --config=configs/lm.py:size=tiny --workdir=/tmp/hh_lm

trains a ~0.9M-parameter LM on WikiText-2 with a tokenizer trained on it, on 2 CPU cores in a few
minutes; validation loss ends far below the unigram entropy of the tokenised text (both printed).
Paper sizes (``size=13M`` … ``size=52B``) switch to bf16 compute, full remat and 2048-token
sequences; see ``python -m hh.plan`` for what fits where.

Every default lives here with a comment; override any key from the command line, e.g.
``--config.train.steps=50 --config.mesh.fsdp=4`` (the config is locked: a misspelt key is an error).
"""
from __future__ import annotations

import ml_collections
from ml_collections import config_dict

from configs import common, sizes


def model_config(size: str, paper_scale: bool) -> ml_collections.ConfigDict:
  """The ``config.model`` block for a size name (one of ``configs.sizes.SIZES``)."""
  n_layer, d_model, n_head, d_ff, _ = sizes.lookup(size)
  return ml_collections.ConfigDict(dict(
      size=size,            # name in configs/sizes.py; the four numbers below come from it
      n_layer=n_layer,
      d_model=d_model,
      n_head=n_head,
      d_ff=d_ff,
      # Rotary positions: relative, so left-padded batches need only position ids from the mask,
      # and no table caps the context (the paper's scheme is unknown, SPEC §1).
      rope_theta=10_000.0,
      init_std=0.02,        # GPT-2 style; residual output projections get init_std/sqrt(2·n_layer)
      dtype="bfloat16" if paper_scale else "float32",  # compute dtype (activations, matmuls)
      param_dtype="float32",  # master weights and AdamW state stay fp32
      # jax.checkpoint policy for each scanned layer: none | full | dots | dots_no_batch.
      remat_policy="full" if paper_scale else "none",
      # GELU: exact (erf) for paper sizes — on CPU the 13M PM step is 14% faster than with the
      # tanh approximation; the CPU sizes keep tanh, with which every recorded run and figure
      # of the README was made.
      gelu_approximate=not paper_scale,
      # Full (uncached) forwards split the queries into blocks of this many tokens that skip the
      # keys the causal mask hides (about half the attention work at long contexts); 0: one block.
      attn_chunk=128,
  ))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = common.parse_arg(arg, size="tiny")
  paper_scale = arg.size not in sizes.CPU_SIZES
  config = ml_collections.ConfigDict()
  config.stage = "lm"       # which stage hh.main runs
  config.seed = 0           # model init, data order and every other random choice derive from it
  config.model = model_config(arg.size, paper_scale)

  config.tokenizer = ml_collections.ConfigDict(dict(
      path=config_dict.placeholder(str),  # a sentencepiece .model; None: train one in the workdir
      vocab_size=32_000 if paper_scale else 4096,  # used when training one
  ))

  config.data = ml_collections.ConfigDict(dict(
      sources=("wikitext2",),  # wikitext2 and/or sim (the synthetic world's dialogues)
      dir=str(common.SHARED_DATA / "wikitext-2"),  # folder holding the raw text files below
      files=("valid.txt", "test.txt"),  # read and split into articles
      val_every=10,          # every 10th document is held out for validation
      seq_len=2048 if paper_scale else 128,  # tokens per training sequence
      batch_size=64 if paper_scale else 16,  # global batch (sequences), split over data×fsdp
  ))

  config.optim = ml_collections.ConfigDict(dict(
      lr=3e-4 if paper_scale else 3e-3,  # peak LR (the paper's pretraining LR is unpublished)
      warmup_steps=2000 if paper_scale else 30,  # linear warmup from 0
      schedule="cosine",     # cosine | linear | constant after warmup
      end_lr_ratio=0.1,      # final LR as a fraction of the peak
      weight_decay=0.1,      # AdamW, on every matrix (not on norm scales or biases)
      b1=0.9,
      b2=0.95,
      eps=1e-8,
      clip_norm=1.0,         # global gradient-norm clipping
  ))

  config.train = ml_collections.ConfigDict(dict(
      steps=100_000 if paper_scale else 400,
      log_every=20,          # train metrics to JSON lines / TensorBoard
      eval_every=100,        # validation loss
      eval_at=(),            # extra steps to evaluate at (e.g. log-spaced learning curves)
      eval_batches=8,        # validation batches per evaluation (fixed set)
      ckpt_every=100,        # async orbax checkpoint
      keep_ckpts=2,
      progress=True,         # tqdm bar with step/s and tokens/s
      stop_at=config_dict.placeholder(int),  # stop (checkpointed) here as a preemption would
  ))

  # Device mesh: one axis may be -1 (all remaining devices). Batch is split over data×fsdp.
  config.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  # Logical axis → mesh axis (MaxText style). Parameters: embed/mlp/heads/kv/vocab/norm/layers;
  # activations: act_*. The scan over layers adds the leading 'layers' axis.
  config.axis_rules = (
      ("act_batch", ("data", "fsdp")),
      ("act_len", None),
      ("act_embed", None),
      ("act_heads", "tensor"),
      ("act_mlp", "tensor"),
      ("act_vocab", "tensor"),
      ("act_kv", None),
      ("embed", "fsdp"),
      ("mlp", "tensor"),
      ("heads", "tensor"),
      ("vocab", "tensor"),
      ("kv", None),
      ("norm", None),
      ("layers", None),
  )
  # Fail when more than this fraction of parameters is replicated on a mesh of >1 device
  # (norm scales and biases are the only parameters expected to be).
  config.max_replicated_fraction = 0.01
  config.init_from = config_dict.placeholder(str)  # a checkpoint dir of another run: params only
  return config
