"""Scoring with a PM: every pair of a dataset (evaluation), and any texts (``Scorer`` + CLI).

  python -m hh.pm.score --pm=runs/pm --input=samples.jsonl --output=scored.jsonl

Input lines: ``{"context": "\\n\\nHuman: …", "response": " …"}`` (the response as it follows
``"\\n\\nAssistant:"``). Output lines add ``"score"``: the PM's score at the EOC token minus the
PM's mean-removal offset (Bai et al. 2022, §3.1), so scores of different PMs are comparable. Batched, jitted
and sharded over the PM's mesh with the stage's own ``score_fn``; used by PPO, best-of-N and the
online loop.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from hh import cli, io, sharding
from hh import tokenizer as tok_lib
from hh.data import pipeline
from hh.models import ModelConfig, PreferenceModel
from hh.pm import step as pm_step
from hh.train import build as build_lib


def score_pairs(score, params, source, tok, seq_len: int, batch_pairs: int, mesh) -> dict:
  """Scores every pair of a source with a jitted ``score(params, tokens, mask, eoc)``.

  Returns good, bad [N] and the per-pair fields turns, part (which dataset), index.
  """
  loader = pipeline.make_loader(source, [pipeline.PairTokenizer(tok, seq_len)], batch_pairs,
                                seed=0, shuffle=False, num_epochs=1, drop_remainder=False,
                                by_process=False)
  out = {k: [] for k in ("good", "bad", "turns", "part", "index")}
  for batch in loader:  # the same global batch in every process
    n = len(batch["index"])
    if n < batch_pairs:  # pad the last batch by repeating its last row
      batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_pairs - n, 0)])
               for k, v in batch.items()}
    stacked = pipeline.pm_pair_batch(batch)
    arrays = sharding.whole_batch({k: stacked[k] for k in ("tokens", "mask", "eoc")}, mesh)
    s = sharding.to_host(score(params, arrays["tokens"], arrays["mask"], arrays["eoc"]))
    out["good"].append(s[:batch_pairs][:n])
    out["bad"].append(s[batch_pairs:][:n])
    out["turns"].append(batch["num_human_turns"][:n])
    out["part"].append(batch["part"][:n])
    out["index"].append(batch["index"][:n])
  return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


class Scorer:
  """A PM loaded from its workdir; ``score(contexts, responses) -> [N] float64``."""

  def __init__(self, pm_workdir: str, batch_size: int = 64):
    config_path = os.path.join(pm_workdir, "config.json")
    result_path = os.path.join(pm_workdir, "pm_result.json")
    for path in (config_path, result_path):
      if not io.exists(path):
        raise FileNotFoundError(f"--pm={pm_workdir!r}: no {os.path.basename(path)} (not a "
                                "finished PM workdir)")
    cfg = ml_collections.ConfigDict(io.read_json(config_path))
    result = io.read_json(result_path)
    self.offset = result["offset"]
    self.tok = tok_lib.Tokenizer.load(result["tokenizer"])
    self.seq_len = cfg.pm.finetune.seq_len
    self.mesh = sharding.make_mesh(cfg.mesh)
    self.batch_size = sharding.padded_batch_size(batch_size, self.mesh)
    model = PreferenceModel(ModelConfig.from_config(cfg.model, self.tok.vocab_size))
    rules = sharding.rules(cfg)
    example = (jnp.zeros((1, self.seq_len), jnp.int32),) * 2 + (jnp.zeros((1,), jnp.int32),)
    with jax.set_mesh(self.mesh):
      self.params = build_lib.inference_params(model, example, os.path.join(pm_workdir,
                                                                            "finetune"),
                                               self.mesh, rules)
      self._score = build_lib.jit_forward(pm_step.score_fn(model), self.mesh, rules)

  def score(self, contexts: list[str], responses: list[str]) -> np.ndarray:
    """Mean-removed scores [N] of each response after its context."""
    return self._scores([pipeline.pm_sequence(self.tok, c, r, self.seq_len)
                         for c, r in zip(contexts, responses, strict=True)])

  def score_ids(self, contexts: list[list[int]], responses: list[list[int]]) -> np.ndarray:
    """``score`` on token ids of the PM's own tokenizer; each response starts with the
    "\n\nAssistant:" piece."""
    return self._scores([pipeline.pm_sequence_ids(c, r, self.tok.eoc_id, self.seq_len)
                         for c, r in zip(contexts, responses, strict=True)])

  def _scores(self, rows) -> np.ndarray:
    out = []
    for start in range(0, len(rows), self.batch_size):
      chunk = rows[start:start + self.batch_size]
      n = len(chunk)
      chunk = chunk + [chunk[-1]] * (self.batch_size - n)  # fixed shapes: one compilation
      batch = {"tokens": np.stack([c[0] for c in chunk]), "mask": np.stack([c[1] for c in chunk]),
               "eoc": np.array([c[2] for c in chunk], np.int32)}
      with jax.set_mesh(self.mesh):
        arrays = sharding.whole_batch(batch, self.mesh)
        s = self._score(self.params, arrays["tokens"], arrays["mask"], arrays["eoc"])
      out.append(sharding.to_host(s).astype(np.float64)[:n])
    return (np.concatenate(out) if out else np.zeros(0)) - self.offset


def main(argv):
  del argv
  f = flags.FLAGS
  with cli.user_errors("hh.pm.score"):
    rows = io.read_jsonl(f.input, {"context": str, "response": str})
    scores = Scorer(f.pm).score([r["context"] for r in rows], [r["response"] for r in rows])
    lines = [json.dumps({**r, "score": float(s)}) for r, s in zip(rows, scores)]
    if f.output:
      io.write_text(f.output, "\n".join(lines) + "\n")
    else:
      print("\n".join(lines))


def define_flags():
  flags.DEFINE_string("pm", None, "A PM workdir (configs/pm.py).")
  flags.DEFINE_string("input", None, "JSON lines with 'context' and 'response'.")
  flags.DEFINE_string("output", None, "Where to write the scored lines (default: stdout).")
  flags.mark_flags_as_required(["pm", "input"])


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, "hh.pm.score"))
