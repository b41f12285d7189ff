"""The LM pretraining stage: tokenizer → windows → grain batches → shared build → ``fit``.

Resume order: the workdir's own checkpoint (with the data position), then
``config.lm.init_from`` (params only), then a fresh initialisation. The tokenizer trained here is
saved in the workdir and reused.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hh import io, sharding
from hh import tokenizer as tok_lib
from hh.data import text
from hh.lm import step as lm_step
from hh.models import DecoderLM, ModelConfig, hf
from hh.train import build as build_lib
from hh.train import checkpoint, loop
from hh.train import metrics as metrics_lib
from hh.train import state as state_lib


@dataclasses.dataclass
class LMData:
  tokenizer: tok_lib.Tokenizer
  train: np.ndarray          # [N, seq_len + 1] windows
  train_weight: np.ndarray   # [N] loss weight of each window (its dataset's)
  val: np.ndarray
  unigram_entropy: float     # nats/token of the training tokens' unigram distribution


def load_tokenizer(config, workdir: str, train_texts: list[str] | None) -> tok_lib.Tokenizer:
  """``config.tokenizer.path`` if set; else the workdir's; else (the first time) the one of the
  model ``config.lm.init_from`` names (an imported or Hugging Face checkpoint), else one trained
  on ``train_texts``; a new one is written to the workdir."""
  if config.tokenizer.path is not None:
    return tok_lib.Tokenizer.load(config.tokenizer.path)
  if (own := tok_lib.find(workdir)) is not None:
    return tok_lib.Tokenizer.load(own)
  init = config.lm.get("init_from") if "lm" in config else None
  if init and (tok_lib.find(init) or hf.is_hf_dir(init)):
    tok = tok_lib.for_dir(init)
    tok.save(workdir)
    return tok
  path = os.path.join(workdir, "tokenizer.model")
  lines = [line for t in train_texts for line in t.splitlines()]
  return tok_lib.train(lines, config.tokenizer.vocab_size, path)


def load_data(config, workdir: str, places, data_cfg=None) -> LMData:
  """Each dataset's documents → train/validation split → tokens → windows of seq_len + 1.

  ``places``: a ``hh.sources.Places``; ``data_cfg``: a data block like ``config.lm.data``
  (default: that one). The data libraries (TFDS, grain) are imported where
  data is read, so ``build`` — and the benchmarks and planner that use it — need only JAX.
  """
  from hh import sources
  data = data_cfg or config.lm.data
  split = []
  for spec, weight in data.datasets:
    docs = sources.documents(spec, places, data.wikitext_files)
    split.append((*text.split_articles(docs, data.val_every), float(weight)))
  tok = load_tokenizer(config, workdir, [t for train, _, _ in split for t in train])
  train, weight, val, streams = [], [], [], []
  for train_texts, val_texts, w in split:
    stream = text.tokenize(train_texts, tok)
    streams.append(stream)
    train.append(text.chunks(stream, data.seq_len))
    weight.append(np.full(len(train[-1]), w, np.float32))
    val.append(text.chunks(text.tokenize(val_texts, tok), data.seq_len))
  return LMData(tok, np.concatenate(train), np.concatenate(weight), np.concatenate(val),
                tok_lib.unigram_entropy(np.concatenate(streams), tok.vocab_size))


def windows(data: LMData, data_cfg, seed: int):
  """(endless shuffled iterator over the training windows, the fixed validation batches): the
  batches of every stage that trains on LM windows (the LM, context distillation)."""
  from hh.data import pipeline
  loader = pipeline.make_loader(pipeline.WindowSource(data.train, data.train_weight),
                                [pipeline.LMWindow()], data_cfg.batch_size, seed=seed,
                                num_epochs=None, by_process=False)
  return (pipeline.Iterator(loader),
          text.eval_batches(data.val, data_cfg.batch_size, data_cfg.eval_batches))


def build(config, mesh, vocab_size: int) -> build_lib.Built:
  """The LM's model, optimizer and jitted update on ``mesh`` (shared with hh.plan, benchmarks)."""
  model = DecoderLM(ModelConfig.from_config(config.model, vocab_size))
  tx = state_lib.make_optimizer(config.lm.optim, config.lm.loop.steps)
  example = (jnp.zeros((1, config.lm.data.seq_len), jnp.int32),) * 2
  return build_lib.build(model, tx, example, lm_step.lm_loss(model),
                         {"inputs": 2, "targets": 2, "weights": 2}, mesh=mesh,
                         rules=sharding.rules(config), seed=config.seed,
                         max_replicated_fraction=config.max_replicated_fraction)


def evaluate(eval_step, params, batches, mesh) -> dict[str, float]:
  total = None
  for b in batches:
    total = metrics_lib.accumulate(total, eval_step(params, sharding.global_batch(b, mesh)))
  return metrics_lib.reduce(total)


def _init_from(built: build_lib.Built, workdir: str):
  """Params of another run's latest checkpoint (optimizer fresh)."""
  def init(state):
    params = checkpoint.load_params(workdir, built.abstract.params, built.shardings.params)
    return build_lib.with_params(built, state, params)
  return init


def train_and_evaluate(config, workdir: str, world_dir: str | None = None) -> dict[str, Any]:
  """Pretrains the LM named by ``config.lm``; returns the final validation metrics.

  ``world_dir``: where a pipeline built the synthetic world (for ``hh_sim/lm``) when
  ``config.data_dirs.world`` is not set.
  """
  from hh import sources
  io.makedirs(workdir)
  cfg = config.lm
  mesh = sharding.make_mesh(config.mesh)
  data = load_data(config, workdir, sources.Places.from_config(config, workdir, world_dir))
  it, val_batches = windows(data, cfg.data, config.seed)
  settings = loop.Settings.from_config(cfg.loop, progress=config.progress)
  writer = metrics_lib.Writer(workdir)
  with jax.set_mesh(mesh):
    built = build(config, mesh, data.tokenizer.vocab_size)
    eval_step = build_lib.jit_forward(
        lambda p, b: lm_step.eval_metrics(built.model, p, b), mesh, built.rules)
    mngr = checkpoint.manager(workdir, cfg.loop.keep_ckpts, cfg.loop.ckpt_every)
    init = _init_from(built, cfg.init_from) if cfg.init_from else None
    state = build_lib.initial_state(built, mngr, it, init)
    writer.truncate_after(int(jax.device_get(state.step)))
    keys = ("inputs", "targets", "weights")
    state = loop.fit(
        state=state, train_step=built.train_step,
        batches=lambda _: sharding.global_batch(
            sharding.process_rows({k: v for k, v in next(it).items() if k in keys}), mesh),
        data_state=it.state,
        evaluate=lambda s: evaluate(eval_step, s.params, val_batches, mesh),
        settings=settings, mngr=mngr, writer=writer,
        tokens_per_step=cfg.data.batch_size * cfg.data.seq_len,
        lr_fn=state_lib.lr_schedule(cfg.optim, settings.steps))
    final = evaluate(eval_step, state.params, val_batches, mesh)
    mngr.close()
  writer.close()
  final = {"step": int(jax.device_get(state.step)), "val_loss": final["loss"],
           "val_accuracy": final["accuracy"], "unigram_entropy": data.unigram_entropy,
           "train_tokens": int(data.train.size), "vocab_size": data.tokenizer.vocab_size}
  if jax.process_index() == 0:
    io.write_json(os.path.join(workdir, "lm_result.json"), final)
  return final


def summary(result: dict) -> list[str]:
  return [f"lm: validation loss {result['val_loss']:.3f} nats/token after {result['step']} "
          f"steps; unigram entropy of the tokenised text {result['unigram_entropy']:.3f} "
          "nats/token"]
