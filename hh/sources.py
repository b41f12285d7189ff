"""One resolver for every stage's datasets: ``"name/config[:split]"`` specs with explicit weights.

* ``hh_sim/<config>[:split]``: the synthetic world's datasets, built once in
  ``config.data_dirs.world`` (a pipeline workdir) from ``config.world``; a folder built from
  another world is refused, naming the keys that differ (hh/sim/stage.py).
* ``hh_rlhf/<subset>[:split]``: hh-rlhf comparisons from ``config.data_dirs.hh_rlhf`` (official
  layout), built as TFDS into the stage's workdir.
* ``hh_rlhf/<subset>@<dir>[:split]``: the same from another folder in that layout (a tranche
  of the online loop, hh/online/tranche.py), built into a folder of the stage's workdir named by
  the files' hash.
* ``wikitext2``: WikiText-2 raw articles from ``config.data_dirs.wikitext`` (LM only).

A stage's dataset list is a tuple of ``(spec, weight)`` pairs: the weight multiplies each
example's loss (λ of Bai et al. 2022, §3.1, App. A.2 on the harmless comparisons); nothing is inferred from names.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Sequence

import numpy as np

from hh import io
from hh.data import pipeline, tfds_io
from hh.sim import stage as sim_stage


@dataclasses.dataclass(frozen=True)
class Places:
  """Where datasets come from and where builds go."""
  world: dict | None            # config.world, resolved
  world_dir: str | None         # the workdir whose tfds/ holds hh_sim (None: not available)
  hh_rlhf_dir: str
  wikitext_dir: str
  tfds_dir: str                 # where hh_rlhf builds go (the stage's workdir)

  @classmethod
  def from_config(cls, config, workdir: str, world_dir: str | None = None) -> "Places":
    """``world_dir`` (a pipeline's own workdir) is used when ``config.data_dirs.world`` is None."""
    return cls(world=config.world.to_dict(), world_dir=config.data_dirs.world or world_dir,
               hh_rlhf_dir=config.data_dirs.hh_rlhf, wikitext_dir=config.data_dirs.wikitext,
               tfds_dir=io.local_dir(workdir, "tfds"))


def _builder(name: str, places: Places):
  if name.startswith("hh_sim/"):
    if places.world_dir is None:
      raise ValueError(f"{name}: set config.data_dirs.world to the workdir where the world was "
                       "built (a pipeline's)")
    return sim_stage.build(places.world, places.world_dir, name.split("/", 1)[1])
  if name.startswith("hh_rlhf/") and "@" in name:
    name, src = name.split("@", 1)
    if not io.isdir(src):
      raise ValueError(f"{name}@{src}: no such folder (expected the hh-rlhf layout)")
    # the build folder is named by the files' contents: a tranche rewritten in place is rebuilt.
    # Only the data files: another process's atomic write may have its temporary file there.
    digest = hashlib.sha256(name.encode())
    folder = os.path.join(src, name.split("/", 1)[1])
    for f in sorted(f for f in io.listdir(folder) if f.endswith(".jsonl.gz")) \
        if io.isdir(folder) else ():
      with io.open(os.path.join(folder, f), "rb") as fh:
        digest.update(f.encode() + hashlib.sha256(fh.read()).digest())
    key = digest.hexdigest()[:12]
    return tfds_io.build(name, os.path.join(places.tfds_dir, f"from-{key}"), source_dir=src)
  if name.startswith("hh_rlhf/"):
    return tfds_io.build(name, places.tfds_dir, source_dir=places.hh_rlhf_dir)
  if name.startswith("pmp/"):
    raise ValueError(f"{name}: build PMP sets with hh/data/pmp.py from your files first")
  raise ValueError(f"dataset {name!r}: expected hh_sim/..., hh_rlhf/... or wikitext2")


def open_split(spec: str, places: Places):
  """``"hh_sim/helpful:test"`` → its random-access data source (default split: train)."""
  name, _, split = spec.partition(":")
  return _builder(name, places).as_data_source(split=split or "train")


def mixture(datasets: Sequence[tuple[str, float]], places: Places,
            max_records: int | None = None):
  """The concatenated sources of ``(spec, weight)`` pairs; records carry ``_part`` and
  ``_weight``. ``max_records``: N records spread evenly over the mixture (data ablations)."""
  datasets = [tuple(d) for d in datasets]
  for d in datasets:
    if len(d) != 2 or not isinstance(d[0], str) or float(d[1]) < 0:
      raise ValueError(f"dataset entry {d!r}: expected (\"name/config[:split]\", weight ≥ 0)")
  source = pipeline.Concat([open_split(s, places) for s, _ in datasets],
                           [float(w) for _, w in datasets])
  return source if max_records is None else Head(source, max_records)


class Head:
  """N records of a source, spread evenly over it (a data-size ablation)."""

  def __init__(self, source, n: int):
    self.source = source
    self.idx = np.linspace(0, len(source) - 1, min(n, len(source))).round().astype(int)

  def __len__(self):
    return len(self.idx)

  def __repr__(self):  # appears in the saved iterator state: keep it stable
    return f"_Head({self.source!r}, {len(self.idx)})"

  def __getitem__(self, i):
    return self.source[int(self.idx[i])]


def documents(spec: str, places: Places, wikitext_files: Sequence[str]) -> list[str]:
  """An LM source's documents: WikiText-2 articles, or a text dataset's rows (all splits)."""
  if spec == "wikitext2":
    from hh.data import text
    return text.read_articles(places.wikitext_dir, wikitext_files)
  name, _, split = spec.partition(":")
  builder = _builder(name, places)
  splits = [split] if split else list(builder.info.splits)
  docs = []
  for s in splits:
    src = tfds_io.source(builder, s)
    if "text" not in builder.info.features:
      raise ValueError(f"{spec}: not a text dataset (LM sources need a 'text' feature)")
    docs += [tfds_io.text(src[i]["text"]) for i in range(len(src))]
  return docs


def prompt_text(spec: str, places: Places) -> str:
  """A prompt to distil (``config.cd.prompt``): ``hh_sim/hhh`` (the world's HHH prompt) or a
  path to a text file."""
  if spec.startswith("hh_sim/"):
    return tfds_io.text(open_split(spec, places)[0]["text"])
  if not io.exists(spec):
    raise FileNotFoundError(f"config.cd.prompt={spec!r}: neither hh_sim/hhh nor a text file")
  with io.open(spec) as f:
    return f.read()


def request_kind(row: dict) -> str:
  """A prompt row's request kind: the world's ``family``; else from an hh-rlhf row's subset
  ("harmless-*" and red-team prompts are "harmful", the rest "helpful")."""
  if "family" in row:
    return tfds_io.text(row["family"])
  subset = tfds_io.text(row.get("subset", b""))
  return "harmful" if subset.startswith(("harmless", "red-team")) else "helpful"


def prompts(spec: str, places: Places, limit: int | None = None,
            max_chars: int | None = None) -> tuple[list[str], np.ndarray]:
  """The contexts of a prompt or comparison set → (contexts [P], request kinds [P]): the world's
  prompts, or hh-rlhf transcripts up to their last Assistant turn. ``spec``: one set, or several
  joined by "+" (their rows in turn); ``max_chars``: only contexts of at most that many
  characters; ``limit``: the first that many of those (None: all)."""
  contexts, kinds = [], []
  for one in spec.split("+"):
    src = open_split(one, places)
    for i in range(len(src)):
      row = src[i]
      text = tfds_io.text(row["context_text"])
      if max_chars is None or len(text) <= max_chars:
        contexts.append(text)
        kinds.append(request_kind(row))
  n = len(contexts) if limit is None else limit
  return contexts[:n], np.array(kinds[:n])


def has_gold(spec: str) -> bool:
  """Whether a prompt set's responses can be scored by the world's gold annotator."""
  return spec.startswith("hh_sim/")

