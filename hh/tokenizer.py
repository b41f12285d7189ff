"""SentencePiece tokenizer: train from text, load from a path, reserved special tokens.

Reserved ids: 0 ``<pad>``, 1 ``<unk>``, 2 ``<s>``, 3 ``</s>``, 4 ``<|eoc|>`` (the end-of-context
token the PM reads its score on, Bai et al. 2022, App. A.2; a control symbol, so no text ever encodes to it).
The turn markers ``"\\n\\nHuman:"`` and ``"\\n\\nAssistant:"`` and ``"\\n"`` are user-defined
pieces: each always encodes to one token, so turn boundaries are token boundaries.

Normalisation is the identity with whitespace kept and byte fallback on, so
``decode(encode(text)) == text`` for any Unicode text (tested).
"""
from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
EOC = "<|eoc|>"
HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
USER_SYMBOLS = (HUMAN, ASSISTANT, "\n")


class Tokenizer:
  """A thin, picklable wrapper around a SentencePiece model."""

  def __init__(self, model_proto: bytes, path: str | None = None):
    self.path = path
    self._proto = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.eoc_id = self.sp.piece_to_id(EOC)
    self.human_id = self.sp.piece_to_id(HUMAN)
    self.assistant_id = self.sp.piece_to_id(ASSISTANT)
    if self.eoc_id == UNK_ID or self.human_id == UNK_ID:
      raise ValueError(f"tokenizer {path or '<proto>'} lacks the reserved {EOC!r}/turn-marker "
                       "pieces; train it with hh.tokenizer.train")

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    if not os.path.isfile(path):
      raise FileNotFoundError(f"config.tokenizer.path={path!r}: no such file (a SentencePiece "
                              ".model trained by hh.tokenizer.train was expected)")
    with open(path, "rb") as f:
      return cls(f.read(), os.path.abspath(path))

  def __getstate__(self):
    return {"proto": self._proto, "path": self.path}

  def __setstate__(self, state):
    self.__init__(state["proto"], state["path"])

  @property
  def vocab_size(self) -> int:
    return self.sp.get_piece_size()

  def encode(self, text: str) -> list[int]:
    return self.sp.encode(text)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return self.sp.encode(list(texts))

  def decode(self, ids: Iterable[int]) -> str:
    ids = [int(i) for i in ids if int(i) not in (PAD_ID, BOS_ID, EOS_ID, self.eoc_id)]
    return self.sp.decode(ids)


def train(texts: Iterable[str], vocab_size: int, out_path: str, seed_sentences: int = 2_000_000,
          num_threads: int = 2, key: str = "config.tokenizer.vocab_size") -> Tokenizer:
  """Trains a BPE model on an iterable of lines and writes it atomically to ``out_path``; text
  too small for ``vocab_size`` pieces is a ValueError naming ``key`` and the largest allowed."""
  os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
  import io
  proto = io.BytesIO()
  try:
    _train_spm(texts, vocab_size, proto, seed_sentences, num_threads)
  except RuntimeError as e:
    most = re.search(r"value <= (\d+)", str(e))
    if "sentences_.empty()" in str(e):
      raise ValueError(f"{key}={vocab_size}: no text to train a tokenizer on") from None
    if "Vocabulary size too high" not in str(e):
      raise
    allowed = f"≤ {most.group(1)}" if most else "a smaller value"
    raise ValueError(f"{key}={vocab_size}: the text is too small for a tokenizer of that many "
                     f"pieces; allowed for this text: {allowed} (or give more text)") from None
  tmp = tempfile.NamedTemporaryFile(dir=os.path.dirname(os.path.abspath(out_path)),
                                    delete=False, suffix=".tmp")
  with tmp:
    tmp.write(proto.getvalue())
  os.replace(tmp.name, out_path)  # atomic: a crash never leaves half a model
  return Tokenizer(proto.getvalue(), out_path)


def _train_spm(texts: Iterable[str], vocab_size: int, proto, seed_sentences: int,
               num_threads: int):
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(t for t in texts if t.strip()), model_writer=proto,
      vocab_size=vocab_size, model_type="bpe", character_coverage=1.0, byte_fallback=True,
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      add_dummy_prefix=False, split_digits=True, allow_whitespace_only_pieces=True,
      pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID, control_symbols=[EOC],
      user_defined_symbols=list(USER_SYMBOLS), input_sentence_size=seed_sentences,
      shuffle_input_sentence=True, num_threads=num_threads, minloglevel=2)


def unigram_entropy(tokens: np.ndarray, vocab_size: int) -> float:
  """Entropy in nats of the empirical unigram distribution of ``tokens`` (the no-context loss)."""
  counts = np.bincount(tokens.ravel(), minlength=vocab_size).astype(np.float64)
  p = counts[counts > 0] / counts.sum()
  return float(-(p * np.log(p)).sum())
