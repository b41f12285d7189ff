"""The LM pretraining stage: tokenizer → data → sharded state → ``fit`` → report line.

Resume order (STYLE §8): the workdir's own checkpoint, then ``config.init_from`` (params only),
then a fresh initialisation. The tokenizer trained here is saved in the workdir and reused.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from hh import sharding
from hh import tokenizer as tok_lib
from hh.data import text
from hh.lm import step as lm_step
from hh.models import DecoderLM, ModelConfig
from hh.train import checkpoint, loop
from hh.train import metrics as metrics_lib
from hh.train import state as state_lib


@dataclasses.dataclass
class LMData:
  tokenizer: tok_lib.Tokenizer
  train: np.ndarray          # [N, seq_len + 1] windows
  val: np.ndarray
  unigram_entropy: float     # nats/token of the training tokens' unigram distribution


def load_tokenizer(config, workdir: str, train_texts: list[str] | None) -> tok_lib.Tokenizer:
  """``config.tokenizer.path`` if set; else the workdir's, training it on ``train_texts`` once."""
  if config.tokenizer.path is not None:
    return tok_lib.Tokenizer.load(config.tokenizer.path)
  path = os.path.join(workdir, "tokenizer.model")
  if os.path.exists(path):
    return tok_lib.Tokenizer.load(path)
  lines = [line for t in train_texts for line in t.splitlines()]
  return tok_lib.train(lines, config.tokenizer.vocab_size, path)


def corpus(config, world_workdir: str | None) -> list[str]:
  """The documents of ``config.data.sources``: WikiText-2 articles and/or world dialogues."""
  docs: list[str] = []
  for source in config.data.sources:
    if source == "wikitext2":
      docs += text.read_articles(config.data.dir, config.data.files)
    elif source == "sim":
      if world_workdir is None:
        raise ValueError("config.data.sources has 'sim' but no world was built (run "
                         "configs/pipeline.py, which builds the world first)")
      from hh.data import tfds_io
      from hh.sim import stage as sim_stage
      builder = sim_stage.build(config.world.to_dict(), world_workdir, "lm")
      for split in builder.info.splits:
        src = tfds_io.source(builder, split)
        docs += [tfds_io.text(src[i]["text"]) for i in range(len(src))]
    else:
      raise ValueError(f"config.data.sources: unknown source {source!r}; allowed: wikitext2, "
                       "sim")
  return docs


def load_data(config, workdir: str, world_workdir: str | None = None) -> LMData:
  docs = corpus(config, world_workdir)
  train_texts, val_texts = text.split_articles(docs, config.data.val_every)
  tok = load_tokenizer(config, workdir, train_texts)
  train_stream = text.tokenize(train_texts, tok)
  val_stream = text.tokenize(val_texts, tok)
  return LMData(tok, text.chunks(train_stream, config.data.seq_len),
                text.chunks(val_stream, config.data.seq_len),
                tok_lib.unigram_entropy(train_stream, tok.vocab_size))


def build(config, mesh, vocab_size: int):
  """Model, optimizer, abstract state + shardings, and the jitted steps for a mesh."""
  model = DecoderLM(ModelConfig.from_config(config.model, vocab_size))
  tx = state_lib.make_optimizer(config.optim, config.train.steps)
  rules = sharding.rules(config)
  example = (jnp.zeros((1, config.data.seq_len), jnp.int32),) * 2
  init = state_lib.init_fn(model, tx, example, config.seed)
  abstract, shardings = state_lib.abstract_state(init, mesh, rules)
  sharding.check_divisible(abstract.params, shardings.params)
  sharding.check_replication(abstract.params, shardings.params, mesh,
                             config.max_replicated_fraction)
  batch_sh = {k: sharding.batch_sharding(mesh) for k in ("inputs", "targets", "weights")}
  train_step = jax.jit(lm_step.make_train_step(model, tx, rules),
                       in_shardings=(shardings, batch_sh),
                       out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  eval_step = jax.jit(lm_step.make_eval_step(model, rules),
                      in_shardings=(shardings.params, batch_sh),
                      out_shardings=sharding.replicated(mesh))
  return dict(model=model, tx=tx, init=init, abstract=abstract, shardings=shardings,
              train_step=train_step, eval_step=eval_step)


def initial_state(config, built, mngr, batcher):
  """Own checkpoint → ``init_from`` params → fresh; restores the batcher position too."""
  restored = checkpoint.restore_latest(mngr, built["abstract"], built["shardings"])
  if restored is not None:
    state, data_state = restored
    batcher.restore(data_state)
    logging.info("resumed from own checkpoint at step %d", int(state.step))
    return state
  state = state_lib.create_state(built["init"], built["shardings"])
  if config.init_from is not None:
    params = checkpoint.load_params(config.init_from, built["abstract"].params,
                                    built["shardings"].params)
    state = state.replace(params=params, opt_state=built["tx"].init(params))
    logging.info("initialised params from %s", config.init_from)
  return state


def evaluate(eval_step, params, batches, mesh) -> dict[str, float]:
  total = None
  for b in batches:
    total = metrics_lib.accumulate(total, eval_step(params, sharding.global_batch(b, mesh)))
  return metrics_lib.reduce(total)


def train_and_evaluate(config, workdir: str, world_workdir: str | None = None) -> dict[str, Any]:
  """Pretrains the LM named by ``config``; returns the final validation metrics.

  ``world_workdir``: where the pipeline built the synthetic world (for the 'sim' source).
  """
  os.makedirs(workdir, exist_ok=True)
  mesh = sharding.make_mesh(config.mesh)
  data = load_data(config, workdir, world_workdir)
  batcher = text.Batcher(data.train, config.data.batch_size, config.seed)
  val_batches = text.eval_batches(data.val, config.data.batch_size, config.train.eval_batches)
  writer = metrics_lib.Writer(workdir)
  with jax.set_mesh(mesh):
    built = build(config, mesh, data.tokenizer.vocab_size)
    mngr = checkpoint.manager(workdir, config.train.keep_ckpts, config.train.ckpt_every)
    state = initial_state(config, built, mngr, batcher)
    writer.truncate_after(int(jax.device_get(state.step)))
    state = loop.fit(
        state=state, train_step=built["train_step"],
        next_batch=lambda: sharding.global_batch(batcher.next(), mesh),
        data_state=batcher.state,
        evaluate=lambda s: evaluate(built["eval_step"], s.params, val_batches, mesh),
        train_cfg=config.train, mngr=mngr, writer=writer,
        tokens_per_step=config.data.batch_size * config.data.seq_len,
        lr_fn=state_lib.lr_schedule(config.optim, config.train.steps))
    final = evaluate(built["eval_step"], state.params, val_batches, mesh)
    mngr.close()
  writer.close()
  final = {"step": int(jax.device_get(state.step)), "val_loss": final["loss"],
           "val_accuracy": final["accuracy"], "unigram_entropy": data.unigram_entropy,
           "train_tokens": int(data.train.size), "vocab_size": data.tokenizer.vocab_size}
  if jax.process_index() == 0:
    with open(os.path.join(workdir, "lm_result.json"), "w") as f:
      json.dump(final, f, indent=1)
  return final
