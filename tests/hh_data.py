"""The tests' own small real-format data: an hh-rlhf folder (official layout, harmless-base) and
WikiText-2 raw files, generated from a fixed seed — or the real files when ``HH_DATA_DIR`` names a
folder holding ``hh-rlhf/`` and ``wikitext-2/``.

``facts()`` says what the tests may rely on in either: the harmless-base test rows, the index of
a plain row, of a row with an empty chosen response and of the two rows whose chosen transcript
has one Assistant turn more (the contexts the parser realigns).
"""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pathlib
import shutil
import tempfile

import numpy as np


@dataclasses.dataclass(frozen=True)
class Facts:
  root: pathlib.Path            # holds hh-rlhf/ and wikitext-2/
  test_rows: int                # harmless-base/test.jsonl.gz
  plain: int
  empty_chosen: int
  realigned: tuple[int, int]

  @property
  def hh_rlhf(self) -> pathlib.Path:
    return self.root / "hh-rlhf"

  @property
  def wikitext(self) -> pathlib.Path:
    return self.root / "wikitext-2"


REAL = dict(test_rows=1900, plain=0, empty_chosen=86, realigned=(1254, 1688))
GENERATED = dict(test_rows=480, plain=0, empty_chosen=17, realigned=(41, 173))
_VERSION = "3"  # bump when the generator changes: a new folder is made

_WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at "
          "which but have an they you were her she there been one all we their has would when if "
          "so no will can more other about many then them these may some time could into only "
          "river city music army king church game team film ship war water school road field year "
          "north south early later small large first second third great old new long high low "
          "built named played wrote found moved became began served opened closed held won lost "
          "song album station bridge island village castle garden tower market valley forest").split()


def _sentence(rng, lo=6, hi=16) -> str:
  words = [_WORDS[i] for i in rng.integers(0, len(_WORDS), rng.integers(lo, hi))]
  return " ".join(words).capitalize() + "."


def _transcript(rng, turns: int) -> str:
  out = ""
  for _ in range(turns):
    out += f"\n\nHuman: {_sentence(rng, 4, 10)[:-1]}?\n\nAssistant: {_sentence(rng)}"
  return out


def _rows(rng, n: int, special: bool) -> list[dict]:
  rows = []
  for i in range(n):
    ctx = _transcript(rng, int(rng.integers(0, 4)))
    ctx += f"\n\nHuman: {_sentence(rng, 4, 10)[:-1]}?"
    chosen, rejected = _sentence(rng), _sentence(rng)
    if special and i == GENERATED["empty_chosen"]:
      chosen = ""
    if special and i in GENERATED["realigned"]:  # the chosen side has one Assistant turn more
      rows.append({"chosen": f"{ctx}\n\nAssistant: {_sentence(rng)}\n\nAssistant: {chosen}",
                   "rejected": f"{ctx}\n\nAssistant: {rejected}"})
      continue
    rows.append({"chosen": f"{ctx}\n\nAssistant:" + (f" {chosen}" if chosen else ""),
                 "rejected": f"{ctx}\n\nAssistant: {rejected}"})
  return rows


def _wikitext(rng, articles: int) -> str:
  lines = []
  for a in range(articles):
    lines += ["", f" = {_sentence(rng, 1, 4)[:-1].title()} {a} = ", ""]
    for s in range(int(rng.integers(2, 4))):
      lines += [f" = = {_sentence(rng, 1, 3)[:-1].title()} = = ", ""]
      for _ in range(int(rng.integers(1, 4))):
        lines += [" " + " ".join(_sentence(rng) for _ in range(int(rng.integers(2, 6)))), ""]
  return "\n".join(lines) + "\n"


def generate(root: pathlib.Path):
  rng = np.random.default_rng(2022)
  base = root / "hh-rlhf" / "harmless-base"
  base.mkdir(parents=True)
  for split, n in (("train", 960), ("test", GENERATED["test_rows"])):
    with gzip.open(base / f"{split}.jsonl.gz", "wt", encoding="utf-8") as f:
      for row in _rows(rng, n, special=split == "test"):
        f.write(json.dumps(row) + "\n")
  wiki = root / "wikitext-2"
  wiki.mkdir()
  for name, n in (("valid.txt", 150), ("test.txt", 150)):
    (wiki / name).write_text(_wikitext(rng, n), encoding="utf-8")


def facts() -> Facts:
  """The real files under ``HH_DATA_DIR`` when set, else the generated ones (made once per
  machine and generator version, atomically: parallel test workers may race)."""
  root = pathlib.Path(tempfile.gettempdir()) / f"hh-test-data-v{_VERSION}"
  given = os.environ.get("HH_DATA_DIR")
  if given and pathlib.Path(given) != root:  # (a test worker inherits the generated folder's)
    return Facts(root=pathlib.Path(given), **REAL)
  if not root.is_dir():
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hh-test-data-"))
    generate(tmp)
    try:
      tmp.rename(root)
    except OSError:  # another worker made it first
      shutil.rmtree(tmp, ignore_errors=True)
  return Facts(root=root, **GENERATED)
