"""Preference-model pretraining (PMP) data: StackExchange, Reddit, Wikipedia (Askell et al. 2021, PMP).

Each source is read from local files in its public format and turned into ranked pairs
(context, better, worse); every pair is then *binarized* as in Askell et al. §4.1: A > B becomes
two independent comparisons, (A + GOOD) > (A + BAD) and (B + BAD) > (B + GOOD). The PM thus
learns to score a sample-plus-label, never A against B directly. Examples share hh_rlhf's schema
(context turns and text, chosen, rejected), so one PM pipeline reads both.

Formats (one record per line, JSON unless stated):
* **StackExchange** — the stack-exchange-preferences dumps: ``{"question": str, "answers":
  [{"text": str, "score": int (net upvotes), "selected": bool}]}`` (``"pm_score"`` is used as is
  when present instead of ``"score"``). Questions with ≥ 2 answers; an answer's score is
  round(log2(1 + upvotes)), +1 if accepted, −1 if upvotes are negative (Askell et al. 2021, PMP); pairs are
  answers with different scores, at most ``max_pairs_per_question`` per question.
* **Reddit** — Pushshift comment dumps: ``{"id", "parent_id" ("t1_…" comment / "t3_…"
  submission), "body", "score"}``, plus optional submissions ``{"id", "title", "selftext"}``.
  Sibling comments (same parent) whose karma differs by ≥ ``min_karma_gap`` form pairs, the
  higher-karma one better; the parent's text is the context. Deleted/removed bodies are dropped.
* **Wikipedia** — MediaWiki XML export (``<page><title>``, ``<revision><sha1><comment><text>``).
  An identity revert (revision k has revision k−2's sha1) whose comment names vandalism
  (``vandal``, ``rvv``) gives a pair: the pre-edit paragraph is better, the vandalised one worse.
"""
from __future__ import annotations

import difflib
import itertools
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from hh import io
from hh.data.hh_rlhf import ASSISTANT, HUMAN, BadInput, read_json_rows

GOOD_TAG, BAD_TAG = " [GOOD]", " [BAD]"
SOURCES = ("stackexchange", "reddit", "wikipedia")
_VANDAL = re.compile(r"vandal|\brvv\b", re.IGNORECASE)


def stackexchange_score(upvotes: int, accepted: bool) -> int:
  """round(log2(1 + upvotes)) + 1 if accepted − 1 if upvotes < 0 (log of 0 for negatives)."""
  score = round(math.log2(1 + max(upvotes, 0)))
  return score + int(bool(accepted)) - int(upvotes < 0)


def stackexchange_pairs(path: str, max_pairs_per_question: int) -> Iterator[tuple]:
  """(where, context, better, worse) from a stack-exchange-preferences JSONL file."""
  for line, row in read_json_rows(path):
    where = f"{path}:{line}"
    if isinstance(row, BadInput):
      raise row
    if not isinstance(row, dict) or not isinstance(row.get("question"), str) or \
        not isinstance(row.get("answers"), list):
      raise BadInput(where, "missing_key", "expected 'question' (str) and 'answers' (list)")
    scored = []
    for a in row["answers"]:
      if not isinstance(a, dict) or not isinstance(a.get("text"), str):
        raise BadInput(where, "missing_key", "each answer needs a string 'text'")
      if "pm_score" not in a and "score" not in a:
        raise BadInput(where, "missing_key", "each answer needs 'score' or 'pm_score'")
      raw = a["pm_score"] if "pm_score" in a else a["score"]
      if not isinstance(raw, (int, float)) or isinstance(raw, bool):
        raise BadInput(where, "wrong_type", f"an answer's score {raw!r} is not a number")
      s = int(raw) if "pm_score" in a else stackexchange_score(int(raw), a.get("selected", False))
      scored.append((s, a["text"]))
    pairs = [(a, b) if a[0] > b[0] else (b, a)
             for a, b in itertools.combinations(scored, 2) if a[0] != b[0]]
    for good, bad in pairs[:max_pairs_per_question]:
      yield where, row["question"], good[1], bad[1]


def reddit_pairs(comments_path: str, submissions_path: str | None,
                 min_karma_gap: int) -> Iterator[tuple]:
  """(where, context, better, worse) from Pushshift comment (and submission) dumps."""
  parents: dict[str, str] = {}
  if submissions_path:
    for line, row in read_json_rows(submissions_path):
      if isinstance(row, BadInput):
        raise row
      parents["t3_" + str(row["id"])] = (row.get("title", "") + "\n\n" +
                                          row.get("selftext", "")).strip()
  children: dict[str, list] = {}
  for line, row in read_json_rows(comments_path):
    where = f"{comments_path}:{line}"
    if isinstance(row, BadInput):
      raise row
    if not isinstance(row, dict) or not all(k in row for k in ("id", "parent_id", "body",
                                                               "score")):
      raise BadInput(where, "missing_key", "expected 'id', 'parent_id', 'body' and 'score'")
    parents["t1_" + str(row["id"])] = row["body"]
    if row["body"] not in ("[deleted]", "[removed]") and row["body"].strip():
      children.setdefault(row["parent_id"], []).append((int(row["score"]), row["body"], where))
  for parent_id, kids in children.items():
    if parent_id not in parents:
      continue  # the parent is not in the dump: no context
    for a, b in itertools.combinations(kids, 2):
      if abs(a[0] - b[0]) >= min_karma_gap:
        good, bad = (a, b) if a[0] > b[0] else (b, a)
        yield good[2], parents[parent_id], good[1], bad[1]


def _paragraph_change(before: str, after: str) -> tuple[str, str] | None:
  """The first paragraph that differs between two page texts: (before, after)."""
  pb, pa = before.split("\n\n"), after.split("\n\n")
  for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=pb, b=pa, autojunk=False).get_opcodes():
    if tag != "equal":
      return "\n\n".join(pb[i1:i2]).strip(), "\n\n".join(pa[j1:j2]).strip()
  return None


def wikipedia_pairs(xml_path: str) -> Iterator[tuple]:
  """(where, context, better, worse) from vandalism reverts in a MediaWiki XML export."""
  if not io.isfile(xml_path):
    raise FileNotFoundError(f"wikipedia source {xml_path!r}: no such file")
  try:
    tree = ET.parse(xml_path)
  except ET.ParseError as e:
    raise BadInput(f"{xml_path}:{e.position[0]}", "not_xml", str(e)) from None
  strip = lambda tag: tag.rsplit("}", 1)[-1]  # noqa: E731  (namespace-agnostic)
  for page in (e for e in tree.getroot().iter() if strip(e.tag) == "page"):
    fields = {strip(c.tag): c for c in page}
    title = (fields.get("title").text or "") if "title" in fields else ""
    revs = []
    for rev in (c for c in page if strip(c.tag) == "revision"):
      r = {strip(c.tag): (c.text or "") for c in rev}
      revs.append(r)
    for k in range(2, len(revs)):
      if revs[k].get("sha1") and revs[k]["sha1"] == revs[k - 2].get("sha1") and \
          _VANDAL.search(revs[k].get("comment", "")):
        change = _paragraph_change(revs[k - 2].get("text", ""), revs[k - 1].get("text", ""))
        if change and change[0] and change[1]:
          yield (f"{xml_path}:{title}:{revs[k].get('id', k)}",
                 f"Write a paragraph of the Wikipedia article \"{title}\".", change[0], change[1])


def binarize(context: str, better: str, worse: str) -> list[tuple[str, str, str]]:
  """A > B → [(ctx, A+GOOD, A+BAD), (ctx, B+BAD, B+GOOD)] as (context, chosen, rejected)."""
  return [(context, better + GOOD_TAG, better + BAD_TAG),
          (context, worse + BAD_TAG, worse + GOOD_TAG)]


def to_example(context: str, chosen: str, rejected: str, source: str) -> dict:
  """hh_rlhf's schema: a one-turn Human context and Assistant responses."""
  context_text = f"{HUMAN} {context}"
  return {"context": [{"speaker": "Human", "text": context.strip()}],
          "context_text": context_text, "chosen": " " + chosen, "rejected": " " + rejected,
          "chosen_transcript": context_text + ASSISTANT + " " + chosen,
          "rejected_transcript": context_text + ASSISTANT + " " + rejected,
          "num_human_turns": 1, "subset": f"pmp-{source}"}


class Pmp(tfds.core.GeneratorBasedBuilder):
  """Binarized PMP comparisons from local files (one config per source, one 'train' split)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in SOURCES]

  def __init__(self, *, files: dict[str, str], max_pairs_per_question: int = 10,
               min_karma_gap: int = 2, **kwargs):
    """``files``: {'path': ...} (and 'submissions' for Reddit). Bad rows raise BadInput."""
    self.files = files
    self.max_pairs_per_question, self.min_karma_gap = max_pairs_per_question, min_karma_gap
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    turns = tfds.features.Sequence({"speaker": tfds.features.Text(),
                                    "text": tfds.features.Text()})
    text = tfds.features.Text
    return tfds.core.DatasetInfo(
        builder=self, features=tfds.features.FeaturesDict({
            "context": turns, "context_text": text(), "chosen": text(), "rejected": text(),
            "chosen_transcript": text(), "rejected_transcript": text(),
            "num_human_turns": np.int32, "subset": text()}),
        metadata=tfds.core.MetadataDict(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples()}

  def _pairs(self):
    name, path = self.builder_config.name, self.files["path"]
    if not io.isfile(path):
      raise FileNotFoundError(f"pmp/{name}: source file {path!r} does not exist")
    if name == "stackexchange":
      return stackexchange_pairs(path, self.max_pairs_per_question)
    if name == "reddit":
      return reddit_pairs(path, self.files.get("submissions"), self.min_karma_gap)
    return wikipedia_pairs(path)

  def _generate_examples(self):
    counts = {"pairs": 0, "examples": 0}
    for n, (where, context, better, worse) in enumerate(self._pairs()):
      counts["pairs"] += 1
      for i, (ctx, chosen, rejected) in enumerate(binarize(context, better, worse)):
        counts["examples"] += 1
        yield f"{n}-{i}", to_example(ctx, chosen, rejected, self.builder_config.name)
    self.info.metadata["train"] = counts
