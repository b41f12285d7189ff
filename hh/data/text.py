"""Plain-text LM data (WikiText-2 raw): article split, tokenisation and a resumable batcher.

The batcher's order is a pure function of (seed, epoch): chunks of ``seq_len + 1`` tokens are
permuted per epoch and read in order, so its whole state is ``{"epoch", "index"}``; saving that
in the checkpoint and restoring it yields exactly the batches an uninterrupted run would see.
Each process takes its contiguous ``1/process_count`` of every global batch's rows.
"""
from __future__ import annotations

import os
import re

import jax
import numpy as np

from hh.tokenizer import Tokenizer

_ARTICLE = re.compile(r"^ = [^=].* = $")


def read_articles(data_dir: str, files) -> list[str]:
  """WikiText articles (title line + body) from the raw files, in file order."""
  articles: list[list[str]] = []
  for name in files:
    path = os.path.join(data_dir, name)
    if not os.path.isfile(path):
      raise FileNotFoundError(f"config.data.dir={data_dir!r}: missing {name!r} (expected the "
                              f"raw WikiText-2 files {list(files)}; see ../shared/data/README.md)")
    with open(path, encoding="utf-8") as f:
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
    raise ValueError(f"only {len(stream)} tokens: too few for config.data.seq_len={seq_len}")
  idx = np.arange(n)[:, None] * seq_len + np.arange(seq_len + 1)[None, :]
  return stream[idx]


def lm_example(windows: np.ndarray) -> dict[str, np.ndarray]:
  """[B, T+1] token windows → inputs, targets and loss weights, each [B, T]."""
  return {"inputs": windows[:, :-1], "targets": windows[:, 1:],
          "weights": np.ones(windows[:, 1:].shape, np.float32)}


class Batcher:
  """Deterministic, resumable, process-sharded batches of LM windows."""

  def __init__(self, windows: np.ndarray, batch_size: int, seed: int):
    if batch_size % jax.process_count():
      raise ValueError(f"config.data.batch_size={batch_size} must be divisible by the "
                       f"{jax.process_count()} processes")
    if batch_size > len(windows):
      raise ValueError(f"config.data.batch_size={batch_size} exceeds the {len(windows)} "
                       "training sequences")
    self.windows, self.batch_size, self.seed = windows, batch_size, seed
    self.epoch, self.index = 0, 0

  def _order(self, epoch: int) -> np.ndarray:
    return np.random.default_rng([self.seed, epoch]).permutation(len(self.windows))

  def next_global_rows(self) -> np.ndarray:
    """Indices of the next global batch; an epoch's remainder is dropped."""
    if self.index + self.batch_size > len(self.windows):
      self.epoch, self.index = self.epoch + 1, 0
    rows = self._order(self.epoch)[self.index:self.index + self.batch_size]
    self.index += self.batch_size
    return rows

  def next(self) -> dict[str, np.ndarray]:
    """This process's rows of the next global batch."""
    rows = self.next_global_rows()
    per = self.batch_size // jax.process_count()
    mine = rows[jax.process_index() * per:(jax.process_index() + 1) * per]
    return lm_example(self.windows[mine])

  def state(self) -> dict[str, int]:
    return {"epoch": int(self.epoch), "index": int(self.index)}

  def restore(self, state: dict[str, int]):
    self.epoch, self.index = int(state["epoch"]), int(state["index"])


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
