"""Tokenizers: hh's SentencePiece model (train from text, load from a path) and a Hugging Face
``tokenizer.json``, both with hh's reserved pieces; ``load(path)`` picks by the file.

Reserved ids: 0 ``<pad>``, 1 ``<unk>``, 2 ``<s>``, 3 ``</s>``, 4 ``<|eoc|>`` (the end-of-context
token the PM reads its score on, Bai et al. 2022, App. A.2; a control symbol, so no text ever encodes to it).
The turn markers ``"\\n\\nHuman:"`` and ``"\\n\\nAssistant:"`` and ``"\\n"`` are user-defined
pieces: each always encodes to one token, so turn boundaries are token boundaries.

Normalisation is the identity with whitespace kept and byte fallback on, so
``decode(encode(text)) == text`` for any Unicode text (tested).

A public model's tokenizer (a ``tokenizer.json`` or a SentencePiece ``tokenizer.model``) gets the
same pieces appended by ``add_reserved`` (``python -m hh.convert`` does it on import): the EOC as
a special token, the turn markers and ``"\n"`` as ordinary added tokens, so the model's own ids
stay where they were.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence

import numpy as np
import sentencepiece as spm

from hh import io

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
EOC = "<|eoc|>"
HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
USER_SYMBOLS = (HUMAN, ASSISTANT, "\n")


class _Model:
  """What both tokenizers share: the serialised model (``data``, bytes: what ``save`` writes,
  pickling carries and ``same`` compares), its file name, and the reserved ids' check."""
  filename: str
  data: bytes
  path: str | None

  def save(self, directory: str) -> str:
    """Writes the model as ``directory/<filename>`` (atomically); returns the path."""
    from hh import io
    path = os.path.join(directory, self.filename)
    io.write_bytes(path, self.data)
    return path

  def __getstate__(self):
    return {"data": self.data, "path": self.path}

  def __setstate__(self, state):
    self.__init__(state["data"], state["path"])

  def _reserved(self, lookup) -> None:
    """Sets eoc_id, human_id, assistant_id from ``lookup(piece)`` (None: absent), or names the
    first piece missing."""
    ids = {p: lookup(p) for p in (EOC, HUMAN, ASSISTANT)}
    missing = [p for p, i in ids.items() if i is None]
    if missing:
      raise ValueError(f"tokenizer {self.path or '<in memory>'} lacks the reserved piece "
                       f"{missing[0]!r}; allowed: a tokenizer trained by hh.tokenizer.train or "
                       "made by hh.tokenizer.add_reserved (python -m hh.convert import does it)")
    self.eoc_id, self.human_id, self.assistant_id = ids[EOC], ids[HUMAN], ids[ASSISTANT]


class Tokenizer(_Model):
  """A thin, picklable wrapper around a SentencePiece model."""
  filename = "tokenizer.model"

  def __init__(self, model_proto: bytes, path: str | None = None):
    self.path = path
    self.data = model_proto
    self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
    unk = self.sp.unk_id()
    self._reserved(lambda p: None if self.sp.piece_to_id(p) == unk else self.sp.piece_to_id(p))
    self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else EOS_ID

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    """A SentencePiece ``.model`` or a Hugging Face ``tokenizer.json`` (``HFTokenizer``)."""
    if not io.isfile(path):
      raise FileNotFoundError(f"config.tokenizer.path={path!r}: no such file (a SentencePiece "
                              ".model or a Hugging Face tokenizer.json was expected)")
    if path.endswith(".json"):
      return HFTokenizer.load(path)
    with io.open(path, "rb") as f:
      return cls(f.read(), io.abspath(path))

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


class HFTokenizer(_Model):
  """A Hugging Face ``tokenizer.json`` (the ``tokenizers`` library, UTF-8 bytes) with hh's
  reserved pieces, the same interface as ``Tokenizer``. The model's own special tokens (its
  end-of-text) are dropped by ``decode`` as hh's are."""
  filename = "tokenizer.json"

  def __init__(self, spec: bytes, path: str | None = None):
    import tokenizers
    self.path = path
    self.data = spec
    self.tk = tokenizers.Tokenizer.from_str(spec.decode("utf-8"))
    self.tk.no_padding()
    self.tk.no_truncation()
    self.tk.encode_special_tokens = True  # a special token's text is text: nothing encodes to EOC
    self._reserved(self.tk.token_to_id)
    self.eos_id = self._eos()

  def _eos(self) -> int:
    for piece in ("<|endoftext|>", "<|end_of_text|>", "</s>", "<|eot_id|>"):
      if (i := self.tk.token_to_id(piece)) is not None:
        return i
    return self.eoc_id  # no end-of-text token: the EOC (never produced by text) stands in

  @classmethod
  def load(cls, path: str) -> "HFTokenizer":
    with io.open(path, "rb") as f:
      return cls(f.read(), io.abspath(path))

  @property
  def vocab_size(self) -> int:
    return self.tk.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str) -> list[int]:
    return self.tk.encode(text, add_special_tokens=False).ids

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [e.ids for e in self.tk.encode_batch(list(texts), add_special_tokens=False)]

  def decode(self, ids: Iterable[int]) -> str:
    return self.tk.decode([int(i) for i in ids], skip_special_tokens=True)


def with_reserved(src: str) -> Tokenizer | HFTokenizer:
  """The tokenizer of ``src`` (a ``tokenizer.json`` or SentencePiece ``.model``) with hh's
  reserved pieces appended after its ids (those already there are kept); ``.save(dir)`` writes
  it. The EOC is a special (control) token, so no text encodes to it; the turn markers and
  ``"\n"`` are added tokens, each one id."""
  if src.endswith(".json"):
    import tokenizers
    tk = tokenizers.Tokenizer.from_file(src)
    tk.add_special_tokens([tokenizers.AddedToken(EOC, special=True, normalized=False)])
    tk.add_tokens([tokenizers.AddedToken(p, special=False, normalized=False)
                   for p in USER_SYMBOLS])
    return HFTokenizer(tk.to_str().encode("utf-8"), io.abspath(src))
  from sentencepiece import sentencepiece_model_pb2 as pb
  proto = pb.ModelProto()
  with io.open(src, "rb") as f:
    proto.ParseFromString(f.read())
  have = {p.piece for p in proto.pieces}
  kinds = [(EOC, pb.ModelProto.SentencePiece.CONTROL)] + [
      (p, pb.ModelProto.SentencePiece.USER_DEFINED) for p in USER_SYMBOLS]
  for piece, kind in kinds:
    if piece not in have:
      proto.pieces.add(piece=piece, score=0.0, type=kind)
  return Tokenizer(proto.SerializeToString(), io.abspath(src))


def add_reserved(src: str, dst: str) -> str:
  """``with_reserved(src)`` written to ``dst`` (atomically); returns ``dst``."""
  io.write_bytes(dst, with_reserved(src).data)
  return dst


def same(a, b) -> bool:
  """Whether two tokenizers map text to the same ids: the same model, byte for byte."""
  return type(a) is type(b) and a.data == b.data


FILES = ("tokenizer.json", "tokenizer.model")


def find(directory: str) -> str | None:
  """A directory's tokenizer file: ``tokenizer.json``, else ``tokenizer.model``; or None."""
  for name in FILES:
    if io.isfile(os.path.join(directory, name)):
      return os.path.join(directory, name)
  return None


def for_dir(directory: str, fallback: str | None = None) -> Tokenizer | HFTokenizer:
  """The tokenizer of a model directory: an hh workdir's own (or ``fallback``, its
  config.tokenizer.path); a Hugging Face model directory's with hh's pieces added in memory (a
  directory written by ``python -m hh.convert import`` has them on disk already)."""
  path = find(directory) or fallback
  if path is None:
    raise FileNotFoundError(f"{directory}: no tokenizer.json or tokenizer.model (and no "
                            "config.tokenizer.path)")
  try:
    return Tokenizer.load(path)
  except ValueError:
    if not _hf_model_dir(directory):
      raise
    return with_reserved(path)


def _hf_model_dir(directory: str) -> bool:
  try:
    return "model_type" in io.read_json(os.path.join(directory, "config.json"))
  except (OSError, ValueError):
    return False


def train(texts: Iterable[str], vocab_size: int, out_path: str, seed_sentences: int = 2_000_000,
          num_threads: int = 2, key: str = "config.tokenizer.vocab_size") -> Tokenizer:
  """Trains a BPE model on an iterable of lines and writes it atomically to ``out_path``; text
  too small for ``vocab_size`` pieces is a ValueError naming ``key`` and the largest allowed."""
  import io as std_io
  proto = std_io.BytesIO()
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
  io.write_bytes(out_path, proto.getvalue())  # whole or absent: never half a model
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
