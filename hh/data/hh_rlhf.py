"""Anthropic hh-rlhf: parsing rules and a TensorFlow-free TFDS builder (Bai et al. 2022, §2).

Source layout (the official repository, github.com/anthropics/hh-rlhf):
``{source_dir}/{subset}/{train,test}.jsonl.gz`` with one ``{"chosen": str, "rejected": str}``
per line, and ``{source_dir}/red-team-attempts/red_team_attempts.jsonl.gz`` (one JSON array, or
JSON lines). With no ``source_dir`` the builder downloads those files.

Split rule. Each transcript is cut at its **last** ``"\\n\\nAssistant:"``: before it is the
context, after it (leading space included) the final response. When the two contexts differ
(2 of the first 1,900 harmless-base test rows: the chosen transcript has one Assistant turn more)
the shared context is the longest common prefix at which both transcripts start an Assistant
turn, and each transcript's turns after it become its response (the case of the 2 rows: the
shorter context is a prefix of the longer; in sampled tranches: each response runs on into an
Assistant marker of its own); such pairs are counted as ``context_realigned``. Contexts with no
shared Assistant turn are bad input (``context_mismatch``).

Bad input — a truncated or non-JSON line, a missing key, a non-UTF-8 byte, a transcript with no
Assistant turn, identical chosen and rejected, and (with ``allow_empty_response=False``) an empty
final response — raises ``BadInput`` naming file, line and problem; with ``skip_bad=True`` the row
is skipped and counted in the dataset's metadata (``skipped_<problem>``). Empty final responses
are allowed by default: in harmless-base an empty reply is a legitimate "least harmful" choice
(4 of the 1,900 rows); they are counted as ``empty_response``.
"""
from __future__ import annotations

import codecs
import gzip
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Iterator

import numpy as np
import tensorflow_datasets as tfds

from hh import io

HUMAN, ASSISTANT = "\n\nHuman:", "\n\nAssistant:"
PREFERENCE_SUBSETS = ("helpful-base", "helpful-rejection-sampled", "helpful-online",
                      "harmless-base")
# hh's own subsets, same layout: the world's red-team comparisons of rejection-sampled and online
# policies (hh/online/tranche.py; the paper collected none, Bai et al. 2022, §2.2–2.3). Never downloaded.
TRANCHE_SUBSETS = ("harmless-rejection-sampled", "harmless-online")
RED_TEAM = "red-team-attempts"
URL = "https://raw.githubusercontent.com/anthropics/hh-rlhf/master"
_TURN = re.compile(r"\n\n(Human|Assistant):")


class BadInput(ValueError):
  """A row that breaks the format; ``problem`` is its short name (a metadata counter key)."""

  def __init__(self, where: str, problem: str, detail: str):
    super().__init__(f"{where}: {problem}: {detail}")
    self.problem = problem


def parse_turns(text: str) -> list[tuple[str, str]]:
  """``"\\n\\nHuman: a\\n\\nAssistant: b"`` → ``[("Human", "a"), ("Assistant", "b")]``.

  Text before the first marker (normally none) is dropped; each turn's text is stripped.
  """
  parts = _TURN.split(text)
  return [(parts[i], parts[i + 1].strip()) for i in range(1, len(parts) - 1, 2)]


def split_transcript(text: str, where: str) -> tuple[str, str]:
  """(context, final response) at the last Assistant marker; response keeps its leading space."""
  cut = text.rfind(ASSISTANT)
  if cut < 0:
    raise BadInput(where, "no_assistant_turn", "transcript has no '\\n\\nAssistant:' turn")
  return text[:cut], text[cut + len(ASSISTANT):]


def read_json_rows(path: str) -> Iterator[tuple[int, object]]:
  """(1-based line, object) for a .jsonl[.gz] file, or for one JSON array (line = index + 1)."""
  try:
    with io.open(path, "rb") as raw:
      f = gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else raw
      raw_lines = f.readlines()
  except (EOFError, gzip.BadGzipFile, zlib.error) as e:
    raise BadInput(path, "bad_gzip", f"not a complete gzip stream ({type(e).__name__}: {e}); "
                   "a download cut short? fetch the file again") from None
  if raw_lines[:1] and raw_lines[0].startswith(codecs.BOM_UTF8):
    raw_lines[0] = raw_lines[0][len(codecs.BOM_UTF8):]  # a UTF-8 BOM is not part of the data
  head = next((line.strip()[:1] for line in raw_lines if line.strip()), b"")
  if head == b"[":
    try:
      rows = json.loads(b"".join(raw_lines).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
      raise BadInput(path, "not_json", f"not a JSON array ({e})") from None
    yield from ((i + 1, r) for i, r in enumerate(rows))
    return
  for n, raw in enumerate(raw_lines, start=1):
    if not raw.strip():
      continue
    try:
      text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
      yield n, BadInput(f"{path}:{n}", "non_utf8", f"byte {e.start} is not UTF-8")
      continue
    try:
      yield n, json.loads(text)
    except json.JSONDecodeError as e:
      yield n, BadInput(f"{path}:{n}", "not_json", f"truncated or invalid JSON ({e.msg})")


def shared_context(a: str, b: str) -> str | None:
  """The shared context of two transcripts whose last Assistant turns differ, or None: either
  one transcript's context is a prefix of the other's (it has an Assistant turn more), or both
  share a context and each response then runs on into Assistant markers of its own with no Human
  turn (what a sampled response can do). It is the longest common prefix at which both start an
  Assistant turn."""
  n = 0
  for x, y in zip(a, b):
    if x != y:
      break
    n += 1
  p = a.rfind(ASSISTANT, 0, n)   # a marker inside the common prefix: both transcripts have it
  if p < 0:
    return None
  ctx_a, ctx_b = a[:a.rfind(ASSISTANT)], b[:b.rfind(ASSISTANT)]
  short, long_ = sorted((ctx_a, ctx_b), key=len)
  one_more_turn = long_.startswith(short) and long_[len(short):].startswith(ASSISTANT)
  run_on = HUMAN not in a[p:] and HUMAN not in b[p:]
  return a[:p] if one_more_turn or run_on else None


def parse_pair(row: object, where: str, subset: str, allow_empty_response: bool,
               counts: Counter) -> dict:
  """One comparison row → the example dict (see ``HhRlhf._info``), or raises BadInput."""
  if not isinstance(row, dict) or not all(isinstance(row.get(k), str)
                                          for k in ("chosen", "rejected")):
    missing = [k for k in ("chosen", "rejected") if not isinstance(row, dict) or k not in row]
    raise BadInput(where, "missing_key", "expected string keys 'chosen' and 'rejected'"
                   + (f"; missing {missing}" if missing else "; found non-strings"))
  chosen_t, rejected_t = row["chosen"], row["rejected"]
  if chosen_t == rejected_t:
    raise BadInput(where, "identical_pair", "chosen and rejected are the same transcript")
  ctx_c, resp_c = split_transcript(chosen_t, where)
  ctx_r, resp_r = split_transcript(rejected_t, where)
  if ctx_c != ctx_r:
    shared = shared_context(chosen_t, rejected_t)
    if shared is None:
      raise BadInput(where, "context_mismatch", "the two transcripts' contexts differ")
    counts["context_realigned"] += 1
    ctx_c = ctx_r = shared
    resp_c = chosen_t[len(shared) + len(ASSISTANT):]
    resp_r = rejected_t[len(shared) + len(ASSISTANT):]
  if not resp_c.strip() or not resp_r.strip():
    if not allow_empty_response:
      raise BadInput(where, "empty_response", "a final Assistant response is empty")
    counts["empty_response"] += 1
  turns = parse_turns(ctx_c)
  return {"context": [{"speaker": s, "text": t} for s, t in turns], "context_text": ctx_c,
          "chosen": resp_c, "rejected": resp_r, "chosen_transcript": chosen_t,
          "rejected_transcript": rejected_t,
          "num_human_turns": sum(s == "Human" for s, _ in turns), "subset": subset}


def parse_red_team(row: object, where: str) -> dict:
  """One red-team-attempts transcript (not preference data) → example dict."""
  if not isinstance(row, dict) or not isinstance(row.get("transcript"), str):
    raise BadInput(where, "missing_key", "expected a string key 'transcript'")
  turns = parse_turns(row["transcript"])
  if not any(s == "Assistant" for s, _ in turns):
    raise BadInput(where, "no_assistant_turn", "transcript has no '\\n\\nAssistant:' turn")

  def num(key):
    value = row.get(key)
    return float(value) if isinstance(value, (int, float)) else float("nan")

  return {"context": [{"speaker": s, "text": t} for s, t in turns],
          "transcript": row["transcript"], "num_human_turns": sum(s == "Human" for s, _ in turns),
          "rating": num("rating"),
          "min_harmlessness_score_transcript": num("min_harmlessness_score_transcript"),
          "task_description": str(row.get("task_description") or ""),
          "model_type": str(row.get("model_type") or ""),
          "num_params": str(row.get("num_params") or ""), "subset": RED_TEAM}


def _turn_features():
  return tfds.features.Sequence({"speaker": tfds.features.Text(), "text": tfds.features.Text()})


class HhRlhf(tfds.core.GeneratorBasedBuilder):
  """hh-rlhf preference subsets and red-team-attempts, written as array_record (no TensorFlow)."""

  VERSION = tfds.core.Version("1.0.0")
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n)
                     for n in (*PREFERENCE_SUBSETS, *TRANCHE_SUBSETS, RED_TEAM)]

  def __init__(self, *, source_dir: str | None = None, skip_bad: bool = False,
               allow_empty_response: bool = True, **kwargs):
    """``source_dir``: the official layout on disk (None: download); see the module doc."""
    self.source_dir, self.skip_bad = source_dir, skip_bad
    self.allow_empty_response = allow_empty_response
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    if self.builder_config.name == RED_TEAM:
      features = {"context": _turn_features(), "transcript": tfds.features.Text(),
                  "num_human_turns": np.int32, "rating": np.float32,
                  "min_harmlessness_score_transcript": np.float32,
                  "task_description": tfds.features.Text(), "model_type": tfds.features.Text(),
                  "num_params": tfds.features.Text(), "subset": tfds.features.Text()}
    else:
      features = {"context": _turn_features(), "context_text": tfds.features.Text(),
                  "chosen": tfds.features.Text(), "rejected": tfds.features.Text(),
                  "chosen_transcript": tfds.features.Text(),
                  "rejected_transcript": tfds.features.Text(),
                  "num_human_turns": np.int32, "subset": tfds.features.Text()}
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                 homepage="https://github.com/anthropics/hh-rlhf",
                                 metadata=tfds.core.MetadataDict(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    name, src = self.builder_config.name, self.source_dir
    files = ({"train": "red_team_attempts.jsonl.gz"} if name == RED_TEAM else
             {"train": "train.jsonl.gz", "test": "test.jsonl.gz"})
    if src is None and name in TRANCHE_SUBSETS:
      raise ValueError(f"hh_rlhf/{name} is written by the online loop, never downloaded: give "
                       f"its folder (hh_rlhf/{name}@DIR)")
    if src is None:  # the network path: download the official files
      paths = dl_manager.download({s: f"{URL}/{name}/{f}" for s, f in files.items()})
      return {s: self._generate_examples(os.fspath(p), s) for s, p in paths.items()}
    present = {s: os.path.join(src, name, f) for s, f in files.items()
               if io.exists(os.path.join(src, name, f))}
    if not present:
      raise FileNotFoundError(f"source_dir={src!r}: no {name}/{{{','.join(files.values())}}} "
                              "(expected the official hh-rlhf layout)")
    return {s: self._generate_examples(p, s) for s, p in present.items()}

  def _generate_examples(self, path: str, split: str):
    name = self.builder_config.name
    counts: Counter = Counter()
    for line, row in read_json_rows(path):
      where = f"{path}:{line}"
      counts["rows"] += 1
      try:
        if isinstance(row, BadInput):
          raise row
        example = (parse_red_team(row, where) if name == RED_TEAM else
                   parse_pair(row, where, name, self.allow_empty_response, counts))
      except BadInput as e:
        if not self.skip_bad:
          raise
        counts[f"skipped_{e.problem}"] += 1
        continue
      counts["examples"] += 1
      yield line, example
    self.info.metadata[split] = dict(counts)
