"""Nothing executes from files: no pickle, eval or exec on any path that reads data, configs or
checkpoints. A pickle payload planted where hh reads arrays and data is refused, never run."""
import gzip
import pathlib
import pickle
import re

import numpy as np
import pytest

from hh import io

REPO = pathlib.Path(__file__).resolve().parents[1]


class _Payload:
  """Unpickling this runs ``open(marker, "w")`` (what an attacker's file would do)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_the_code_has_no_pickle_eval_or_exec():
  pattern = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|cloudpickle|dill|marshal|shelve)\b|"
                       r"\bpickle\.|(?<![\w.])eval\(|\bexec\(|allow_pickle\s*=\s*True|"
                       r"yaml\.load\(|torch\.load\(")
  hits = []
  for folder in ("hh", "configs", "experiments", "benchmarks"):
    for path in (REPO / folder).rglob("*.py"):
      for n, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("#")[0]
        if pattern.search(code):
          hits.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
  assert not hits, hits


def test_a_planted_pickle_in_an_npz_is_refused(tmp_path):
  marker = tmp_path / "executed"
  path = tmp_path / "eval_scores.npz"
  np.savez(path, part=np.array([_Payload(str(marker))], dtype=object))
  with pytest.raises(ValueError, match="allow_pickle"):
    io.read_npz(str(path))
  from hh import report
  with pytest.raises(ValueError, match="allow_pickle"):
    report.pm_figure(str(tmp_path), ["a"], str(tmp_path / "pm.png"))
  assert not marker.exists()


def test_a_planted_pickle_in_a_dataset_is_refused(tmp_path):
  """A pickle where an hh-rlhf .jsonl.gz belongs, and where an OOD prompt file belongs."""
  from hh.data import hh_rlhf
  marker = tmp_path / "executed"
  data = tmp_path / "harmless-base"
  data.mkdir()
  with gzip.open(data / "test.jsonl.gz", "wb") as f:
    f.write(pickle.dumps(_Payload(str(marker))))
  rows = list(hh_rlhf.read_json_rows(str(data / "test.jsonl.gz")))
  assert rows and all(isinstance(r, hh_rlhf.BadInput) for _, r in rows)
  prompts = tmp_path / "prompts.jsonl"
  prompts.write_bytes(pickle.dumps(_Payload(str(marker))))
  with pytest.raises(ValueError, match=rf"{prompts}:\d+: not"):
    io.read_jsonl(str(prompts), {"prompt": str})
  assert not marker.exists()
