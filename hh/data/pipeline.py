"""Grain pipelines over TFDS data sources: PM pairs, RL prompts and packed LM windows.

Order and sharding: ``grain.samplers.IndexSampler`` shards the records by process
(``jax.process_index()/process_count()``, contiguous, remainder dropped), then shuffles within the
shard from ``seed`` and epoch. Each process tokenises and batches its own ``batch_size /
process_count`` rows; ``hh.sharding.global_batch`` turns them into global arrays on the mesh.
The iterator's state (a small JSON string) goes into the orbax checkpoint beside the train state;
restoring it replays exactly the batches an uninterrupted run would have produced next.

Truncation (Bai et al. 2022, App. A.2): a PM sample is ``context + "\\n\\nAssistant:" + response + <|eoc|>``.
The context is cut from the **left** so the response and the EOC token always survive; only a
response longer than ``seq_len - 1`` tokens on its own is cut, at its end (``truncated`` = 1).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import grain
import jax
import numpy as np

from hh.data.tfds_io import text
from hh.tokenizer import ASSISTANT, PAD_ID, Tokenizer


def pm_sequence(tok: Tokenizer, context: str, response: str, seq_len: int):
  """Right-padded ids [T], mask [T], EOC index, and whether the response itself was cut."""
  return pm_sequence_ids(tok.encode(context), tok.encode(ASSISTANT + response), tok.eoc_id,
                         seq_len)


def pm_sequence_ids(ctx: list[int], resp: list[int], eoc_id: int, seq_len: int):
  """``pm_sequence`` from ids: ``resp`` starts with the "\n\nAssistant:" piece; the context is
  cut from the left, then the response from the right, to leave room for the EOC token."""
  budget = seq_len - 1
  truncated = len(resp) > budget
  resp = resp[:budget]
  ctx = ctx[len(ctx) - (budget - len(resp)):] if budget > len(resp) else []
  ids = list(ctx) + list(resp) + [eoc_id]
  out = np.full(seq_len, PAD_ID, np.int32)
  out[:len(ids)] = ids
  mask = (np.arange(seq_len) < len(ids)).astype(np.int32)
  return out, mask, len(ids) - 1, truncated


def prompt_sequence(tok: Tokenizer, context: str, seq_len: int):
  """Left-padded ids [T] and mask [T] for ``context + "\\n\\nAssistant:"`` (cut from the left)."""
  ids = tok.encode(context + ASSISTANT)[-seq_len:]
  out = np.full(seq_len, PAD_ID, np.int32)
  out[seq_len - len(ids):] = ids
  mask = (np.arange(seq_len) >= seq_len - len(ids)).astype(np.int32)
  return out, mask


@dataclasses.dataclass(frozen=True)
class PairTokenizer(grain.transforms.Map):
  """A comparison → chosen/rejected sequences [T] with masks, EOC indices and metadata."""
  tok: Tokenizer
  seq_len: int

  def map(self, ex: dict) -> dict:
    index = ex["_index"]
    context = text(ex["context_text"])
    out = {"index": np.int64(index), "num_human_turns": np.int32(ex["num_human_turns"]),
           "weight": np.float32(ex.get("_weight", 1.0)), "part": np.int32(ex.get("_part", 0))}
    for side in ("chosen", "rejected"):
      ids, mask, eoc, cut = pm_sequence(self.tok, context, text(ex[side]), self.seq_len)
      out.update({f"{side}_tokens": ids, f"{side}_mask": mask, f"{side}_eoc": np.int32(eoc),
                  f"{side}_truncated": np.int32(cut)})
    return out


@dataclasses.dataclass(frozen=True)
class PromptTokenizer(grain.transforms.Map):
  """A context (ending on a Human turn) → left-padded prompt tokens for RL."""
  tok: Tokenizer
  seq_len: int

  def map(self, ex: dict) -> dict:
    index = ex["_index"]
    ids, mask = prompt_sequence(self.tok, text(ex["context_text"]), self.seq_len)
    return {"index": np.int64(index), "prompt_tokens": ids, "prompt_mask": mask,
            "num_human_turns": np.int32(ex["num_human_turns"])}


class WindowSource:
  """Packed LM windows [N, T+1] with a loss weight each, as a random-access source."""

  def __init__(self, windows: np.ndarray, weights: np.ndarray):
    self.windows, self.weights = windows, weights

  def __len__(self) -> int:
    return len(self.windows)

  def __repr__(self) -> str:  # appears in the saved iterator state: keep it stable
    return f"WindowSource({self.windows.shape})"

  def __getitem__(self, i: int) -> dict:
    return {"window": self.windows[i], "weight": self.weights[i]}


@dataclasses.dataclass(frozen=True)
class LMWindow(grain.transforms.Map):
  """A window of T+1 tokens → inputs, targets [T] and per-token loss weights [T]."""

  def map(self, ex: dict) -> dict:
    w = ex["window"]
    return {"index": np.int64(ex["_index"]), "inputs": w[:-1], "targets": w[1:],
            "weights": np.full(len(w) - 1, ex["weight"], np.float32)}


class Indexed:
  """A data source whose records carry their own index (``"_index"``), to trace every row."""

  def __init__(self, source):
    self.source = source

  def __len__(self) -> int:
    return len(self.source)

  def __repr__(self) -> str:  # appears in the saved iterator state: keep it stable
    return f"Indexed({self.source!r})"

  def __getitem__(self, i: int) -> dict:
    return {**self.source[i], "_index": int(i)}


class Concat:
  """Several data sources as one; records get ``_part`` (which source) and ``_weight``."""

  def __init__(self, sources: Sequence, weights: Sequence[float]):
    self.sources, self.weights = list(sources), list(weights)
    self.offsets = np.cumsum([0] + [len(s) for s in self.sources])

  def __len__(self) -> int:
    return int(self.offsets[-1])

  def __repr__(self) -> str:
    return f"Concat({self.sources!r}, {self.weights!r})"

  def __getitem__(self, i: int) -> dict:
    part = int(np.searchsorted(self.offsets, i, side="right") - 1)
    ex = self.sources[part][int(i - self.offsets[part])]
    return {**ex, "_part": part, "_weight": self.weights[part]}


def make_loader(source, transforms: Sequence, batch_size: int, seed: int,
                num_epochs: int | None = 1, shuffle: bool = True,
                worker_count: int = 0, drop_remainder: bool = True,
                by_process: bool = True) -> grain.DataLoader:
  """This process's loader of ``batch_size / process_count`` rows per (global) batch.

  ``by_process=False``: every process reads the same global batches (of ``batch_size`` rows)
  and keeps its own rows with ``hh.sharding.process_rows``, so the global batch — and the run —
  does not depend on the number of processes (every process tokenises the whole batch).
  """
  n_proc = jax.process_count()
  if batch_size % n_proc:
    raise ValueError(f"batch_size={batch_size} must be divisible by the {n_proc} processes")
  shard = grain.sharding.ShardOptions(shard_index=jax.process_index() if by_process else 0,
                                      shard_count=n_proc if by_process else 1,
                                      drop_remainder=drop_remainder)
  if drop_remainder and batch_size > len(source) // shard.shard_count * shard.shard_count:
    raise ValueError(f"batch size {batch_size} exceeds the {len(source)} training records")
  sampler = grain.samplers.IndexSampler(num_records=len(source), shard_options=shard,
                                        shuffle=shuffle, num_epochs=num_epochs, seed=seed)
  ops = [*transforms, grain.transforms.Batch(batch_size // shard.shard_count,
                                             drop_remainder=drop_remainder)]
  return grain.DataLoader(data_source=Indexed(source), sampler=sampler, operations=ops,
                          worker_count=worker_count)


class Iterator:
  """A loader's iterator with JSON-able state for the checkpoint (``state()``/``restore()``)."""

  def __init__(self, loader: grain.DataLoader):
    self._it = iter(loader)

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    return next(self._it)

  def state(self) -> dict[str, str]:
    return {"grain": self._it.get_state().decode()}

  def restore(self, state: dict[str, str]):
    self._it.set_state(state["grain"].encode())


def pm_pair_batch(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Stacks a PM batch's chosen and rejected rows into one trunk batch of 2B sequences.

  Rows [0, B) are chosen, [B, 2B) rejected; ``eoc`` indexes each row's EOC token. Stacked from
  the whole global batch (``make_loader(..., by_process=False)``) and then cut with
  ``hh.sharding.process_rows``, so the global array keeps this layout whatever the number of
  processes.
  """
  return {"tokens": np.concatenate([batch["chosen_tokens"], batch["rejected_tokens"]]),
          "mask": np.concatenate([batch["chosen_mask"], batch["rejected_mask"]]),
          "eoc": np.concatenate([batch["chosen_eoc"], batch["rejected_eoc"]]),
          "weight": batch["weight"]}

