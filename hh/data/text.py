"""Plain-text LM data (WikiText-2 raw, or any text dataset's rows): article split, tokenisation,
windows of ``seq_len + 1`` tokens, and the fixed validation batches. Training batches come from
grain (hh/data/pipeline.py: ``WindowSource``, ``LMWindow``) with its resumable iterator state.
"""
from __future__ import annotations

import os
import re

import jax
import numpy as np

from hh import io
from hh.tokenizer import Tokenizer

_ARTICLE = re.compile(r"^ = [^=].* = $")


def read_articles(data_dir: str, files) -> list[str]:
  """WikiText articles (title line + body) from the raw files, in file order."""
  if not data_dir:
    raise ValueError("config.data_dirs.wikitext is not set: a folder of raw WikiText-2 files "
                     f"{list(files)} (or HH_DATA_DIR, a folder holding wikitext-2/)")
  articles: list[list[str]] = []
  for name in files:
    path = os.path.join(data_dir, name)
    if not io.isfile(path):
      raise FileNotFoundError(f"config.data_dirs.wikitext={data_dir!r}: missing {name!r} (expected the "
                              f"raw WikiText-2 files {list(files)})")
    with io.open(path, encoding="utf-8") as f:
      for line in f:
        if _ARTICLE.match(line.rstrip("\n")) or not articles:
          articles.append([])
        articles[-1].append(line)
  return ["".join(a) for a in articles if "".join(a).strip()]


def split_articles(articles: list[str], val_every: int) -> tuple[list[str], list[str]]:
  """Every ``val_every``-th document is validation, the rest train."""
  val = [a for i, a in enumerate(articles) if i % val_every == val_every - 1]
  train = [a for i, a in enumerate(articles) if i % val_every != val_every - 1]
  return train, val


def tokenize(articles: list[str], tok: Tokenizer) -> np.ndarray:
  """One int32 stream of all articles' tokens."""
  return np.concatenate([np.asarray(ids, np.int32) for ids in tok.encode_batch(articles)])


def chunks(stream: np.ndarray, seq_len: int) -> np.ndarray:
  """Non-overlapping windows [N, seq_len + 1] (input and shifted target share a window)."""
  n = (len(stream) - 1) // seq_len
  if n < 1:
    raise ValueError(f"only {len(stream)} tokens: too few for seq_len={seq_len} (config.lm.data.seq_len)")
  idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
  return stream[idx]


def lm_example(windows: np.ndarray) -> dict[str, np.ndarray]:
  """[B, T+1] token windows → inputs, targets and loss weights, each [B, T]."""
  return {"inputs": windows[:, :-1], "targets": windows[:, 1:],
          "weights": np.ones(windows[:, 1:].shape, np.float32)}


def eval_batches(windows: np.ndarray, batch_size: int, n_batches: int):
  """A fixed list of this process's validation batches: n·B windows spread evenly over the
  validation stream, so every source of a mixed corpus is represented."""
  per = batch_size // jax.process_count()
  n_batches = min(n_batches, len(windows) // batch_size)
  picked = np.linspace(0, len(windows) - 1, n_batches * batch_size).round().astype(int)
  out = []
  for b in range(n_batches):
    rows = picked[b * batch_size:(b + 1) * batch_size]
    out.append(lm_example(windows[rows[jax.process_index() * per:(jax.process_index() + 1) * per]]))
  return out
