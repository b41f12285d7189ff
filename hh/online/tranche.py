"""Comparison tranches of the online loop (Bai et al. 2022, §4.5, §5.1): pairs of policy responses, labels
from a label source, and the hh-rlhf JSONL files that every comparison set is read from.

A pair is two responses to one prompt (``id`` unique within a tranche). A **label source** says
which response is preferred, or that the labeller is unsure (the pair is dropped, as the paper
dropped "unsure" comparisons, Bai et al. 2022, eq. 2.1):

* ``AnnotatorLabels``: the world's simulated crowdworker (``hh/sim/annotator.py``) on gold
  scores — the helpful task on benign prompts, the red-team task (harmlessness) on harmful ones,
  with its temperature and unsure-tie margin;
* ``JsonlLabels``: judgements made elsewhere (by people, e.g. with ``python -m hh.label``), one
  JSON object per line: ``{"id": "<pair id>", "preferred": "<the preferred response, verbatim>"}``
  or ``{"id": "<pair id>", "unsure": true}``, with any further fields (``hh.label`` adds the
  labeller, the time and the 8-point scale value). An unknown id, a second judgement of a pair,
  or a preferred text that is neither response is a one-line error naming ``file:line``; a pair
  with no judgement is not labelled (``Labels.judged``).

``to_label`` writes the pairs people are to judge: ids, the conversation and the two responses
in a random order (``shown``: which sampled response is shown as A, kept beside the sampled pairs
for un-blinding; a judgement names the preferred text, so it does not depend on the order).

* ``PMLabels``: AI feedback — a PM's preference (RLAIF).

``write`` turns labelled pairs into ``<dir>/<subset>/<split>.jsonl.gz`` in hh-rlhf's layout
(the hh-rlhf release's README: full transcripts, chosen and rejected sharing the context); the PM reads it through
the same TFDS builder as every comparison set, with the dataset spec
``hh_rlhf/<subset>@<dir>:<split>`` (``hh/sources.py``). Helpful comparisons go to the
``helpful-rejection-sampled`` / ``helpful-online`` subsets as in the release; the world's
red-team comparisons of RS and online policies (the paper collected none, Bai et al. 2022, §2.2–2.3) to
``harmless-rejection-sampled`` / ``harmless-online``.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from hh import io
from hh.sim import annotator
from hh.sim import world as W

ASSISTANT = "\n\nAssistant:"
KINDS = ("rejection-sampled", "online")


@dataclasses.dataclass(frozen=True)
class Pair:
  """Two responses to one prompt; ``context`` is the conversation up to (not including) the final
  ``"\\n\\nAssistant:"``; responses are the text after it, without the leading space."""
  id: str
  context: str
  family: str            # the world's request family ("harmful" → the red-team task)
  a: str
  b: str


@dataclasses.dataclass(frozen=True)
class Labels:
  """``a_preferred`` [N] bool and ``kept`` [N] bool (False: unsure or unjudged, dropped);
  ``judged`` [N] bool: a judgement was given (None: every pair was)."""
  a_preferred: np.ndarray
  kept: np.ndarray
  judged: np.ndarray | None = None


class LabelSource(Protocol):
  def label(self, pairs: Sequence[Pair]) -> Labels: ...


class AnnotatorLabels:
  """The world's annotator: Bradley–Terry choices on the task's gold score, unsure ties dropped.
  Deterministic in ``seed``."""

  def __init__(self, world_cfg: dict, seed: int):
    self.cfg, self.seed = world_cfg, seed
    self.world = W.make_world(world_cfg["seed"], world_cfg["n_countries"], world_cfg["n_words"])

  def task_scores(self, pairs: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray]:
    """Gold scores [N] of a and b under each pair's task (harmlessness on harmful prompts)."""
    from hh.policy.evaluate import gold_scores
    task = np.array([int(p.family == "harmful") for p in pairs])[:, None]
    ctx = [p.context for p in pairs]
    return tuple(np.take_along_axis(gold_scores(self.world, ctx, [getattr(p, x) for p in pairs]),
                                    task, 1)[:, 0] for x in ("a", "b"))

  def label(self, pairs: Sequence[Pair]) -> Labels:
    s_a, s_b = self.task_scores(pairs)
    rng = np.random.default_rng([self.seed, 31])
    a, kept = annotator.annotate(s_a, s_b, self.cfg["temperature"], self.cfg["tie_margin"], rng)
    return Labels(np.asarray(a, bool), np.asarray(kept, bool))


class JsonlLabels:
  """Judgements from a JSONL file (format in the module doc)."""

  def __init__(self, path: str):
    self.path = path

  def label(self, pairs: Sequence[Pair]) -> Labels:
    index = {p.id: k for k, p in enumerate(pairs)}
    a = np.zeros(len(pairs), bool)
    kept = np.zeros(len(pairs), bool)
    seen: dict[str, int] = {}
    with io.open(self.path, encoding="utf-8") as f:
      for line_no, line in enumerate(f, 1):
        if not line.strip():
          continue
        where = f"{self.path}:{line_no}"
        try:
          row = json.loads(line)
        except json.JSONDecodeError as e:
          raise ValueError(f"{where}: not JSON ({e.msg})") from None
        if not isinstance(row, dict) or "id" not in row or \
            ("preferred" not in row) == (row.get("unsure") is not True):
          raise ValueError(f"{where}: expected {{\"id\": …, \"preferred\": <response text>}} or "
                           "{\"id\": …, \"unsure\": true}")
        pid = str(row["id"])
        if pid not in index:
          raise ValueError(f"{where}: unknown pair id {pid!r} (not in this tranche's "
                           f"{len(pairs)} pairs)")
        if pid in seen:
          raise ValueError(f"{where}: a second judgement of pair {pid!r} (first on line "
                           f"{seen[pid]})")
        seen[pid] = line_no
        k = index[pid]
        if row.get("unsure") is True:
          continue
        pref = row["preferred"]
        if pref not in (pairs[k].a, pairs[k].b):
          raise ValueError(f"{where}: the preferred text of pair {pid!r} is neither of its two "
                           "responses")
        if pairs[k].a == pairs[k].b:
          continue  # identical responses: no comparison
        a[k], kept[k] = pref == pairs[k].a, True
    judged = np.zeros(len(pairs), bool)
    judged[[index[pid] for pid in seen]] = True
    return Labels(a, kept, judged)


class PMLabels:
  """AI feedback (RLAIF): a PM prefers the response it scores higher; pairs whose scores differ
  by less than ``margin`` or not at all (or whose responses are identical) are unsure. Any finished PM
  workdir: typically one larger, or trained on other data, than the PM being made."""

  def __init__(self, pm_dir: str, margin: float = 0.0):
    from hh.pm import score as pm_score
    self.scorer, self.margin = pm_score.Scorer(pm_dir), margin

  def scores(self, pairs: Sequence[Pair]) -> tuple[np.ndarray, np.ndarray]:
    ctx = [p.context for p in pairs]
    return tuple(self.scorer.score(ctx, [" " + getattr(p, x) for p in pairs]) for x in "ab")

  def label(self, pairs: Sequence[Pair]) -> Labels:
    s_a, s_b = self.scores(pairs)
    same = np.array([p.a == p.b for p in pairs], bool)
    diff = np.abs(s_a - s_b)
    return Labels(s_a > s_b, (diff >= self.margin) & (diff > 0) & ~same)


def shown_order(n: int, seed) -> np.ndarray:
  """[n] bool: True where a pair's second sampled response is shown as A (a fair coin each)."""
  return np.random.default_rng(seed).random(n) < 0.5


def to_label(pairs: Sequence[Pair], swapped: np.ndarray) -> list[dict]:
  """The rows people judge: id, the conversation, responses A and B in the shown order (no
  family, no sampled order: nothing that hints at either response)."""
  return [{"id": p.id, "context": p.context, "a": p.b if s else p.a, "b": p.a if s else p.b}
          for p, s in zip(pairs, swapped)]


def write_judgements(path: str, pairs: Sequence[Pair], labels: Labels):
  """``labels`` in ``JsonlLabels``' format (e.g. to hand a tranche's annotator labels to people
  for review, or to check the file path against the annotator)."""
  lines = [json.dumps({"id": p.id, "unsure": True}) if not kept else
           json.dumps({"id": p.id, "preferred": p.a if a else p.b})
           for p, a, kept in zip(pairs, labels.a_preferred, labels.kept)]
  io.write_text(path, "".join(x + "\n" for x in lines))


def subset(kind: str, task: str) -> str:
  """('online', 'helpful') → 'helpful-online'; the red-team task writes 'harmless-…'."""
  if kind not in KINDS or task not in ("helpful", "harmless"):
    raise ValueError(f"tranche kind {kind!r} / task {task!r}; allowed: {KINDS} × "
                     "('helpful', 'harmless')")
  return f"{task}-{kind}"


def rows(pairs: Sequence[Pair], labels: Labels) -> dict[str, list[dict]]:
  """Kept pairs as hh-rlhf rows, by task: ``{"helpful": [...], "harmless": [...]}``; identical
  responses are never a comparison."""
  out: dict[str, list[dict]] = {"helpful": [], "harmless": []}
  for p, a, kept in zip(pairs, labels.a_preferred, labels.kept):
    if not kept or p.a == p.b:
      continue
    chosen, rejected = (p.a, p.b) if a else (p.b, p.a)
    out["harmless" if p.family == "harmful" else "helpful"].append(
        {"chosen": f"{p.context}{ASSISTANT} {chosen}",
         "rejected": f"{p.context}{ASSISTANT} {rejected}"})
  return out


def write(out_dir: str, kind: str, split: str, pairs: Sequence[Pair], labels: Labels) -> dict:
  """Writes ``out_dir/<subset>/<split>.jsonl.gz`` for each task with comparisons (atomically;
  gzip without a timestamp, so the bytes depend on the rows only) → {subset: file info}."""
  written = {}
  for task, rs in rows(pairs, labels).items():
    if not rs:
      continue
    name = subset(kind, task)
    body = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rs).encode("utf-8")
    data = gzip.compress(body, mtime=0)
    path = os.path.join(out_dir, name, f"{split}.jsonl.gz")
    io.write_bytes(path, data)
    written[name] = {"path": path, "rows": len(rs), "sha256": hashlib.sha256(data).hexdigest()}
  return written
