"""Score any (context, response) texts with a trained PM: a function and a CLI.

  python -m hh.pm.score --pm=runs/pm --input=samples.jsonl --output=scored.jsonl

Input lines: ``{"context": "\\n\\nHuman: …", "response": " …"}`` (the response as it follows
``"\\n\\nAssistant:"``). Output lines add ``"score"``: the PM's score at the EOC token minus the
PM's mean-removal offset (SPEC §2.2), so scores of different PMs are comparable. Batched, jitted
and sharded over the PM's mesh; used by PPO, best-of-N and the online loop.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags

from hh import cli, sharding
from hh import tokenizer as tok_lib
from hh.data import pipeline
from hh.models import ModelConfig, PreferenceModel
from hh.train import checkpoint


class Scorer:
  """A PM loaded from its workdir; ``score(contexts, responses) -> [N] float64``."""

  def __init__(self, pm_workdir: str, batch_size: int = 64):
    config_path = os.path.join(pm_workdir, "config.json")
    if not os.path.exists(config_path):
      raise FileNotFoundError(f"--pm={pm_workdir!r}: no config.json (not a PM workdir)")
    with open(config_path) as f:
      self.config = ml_collections.ConfigDict(json.load(f))
    with open(os.path.join(pm_workdir, "pm_result.json")) as f:
      result = json.load(f)
    self.offset = result["offset"]
    cfg = self.config
    self.tok = tok_lib.Tokenizer.load(result["tokenizer"])
    self.seq_len, self.batch_size = cfg.finetune.seq_len, batch_size
    self.mesh = sharding.make_mesh(cfg.mesh)
    self.model = PreferenceModel(ModelConfig.from_config(cfg.model, self.tok.vocab_size))
    rules = sharding.rules(cfg)
    example = (jnp.zeros((1, self.seq_len), jnp.int32),) * 2 + (jnp.zeros((1,), jnp.int32),)
    with jax.set_mesh(self.mesh):
      boxed = jax.eval_shape(lambda: self.model.init(jax.random.PRNGKey(0), *example))["params"]
      shardings = sharding.logical_shardings(boxed, self.mesh, rules)
      import flax.linen as nn
      abstract = nn.unbox(boxed)
      self.params = checkpoint.load_params(os.path.join(pm_workdir, "finetune"), abstract,
                                           shardings)

      def score(params, tokens, mask, eoc):
        with nn.logical_axis_rules(rules):
          return self.model.apply({"params": params}, tokens, mask, eoc)
      self._score = jax.jit(score, out_shardings=sharding.replicated(self.mesh))

  def score(self, contexts: list[str], responses: list[str]) -> np.ndarray:
    """Mean-removed scores [N] of each response after its context."""
    rows = [pipeline.pm_sequence(self.tok, c, r, self.seq_len)
            for c, r in zip(contexts, responses, strict=True)]
    out = []
    for start in range(0, len(rows), self.batch_size):
      chunk = rows[start:start + self.batch_size]
      n = len(chunk)
      chunk = chunk + [chunk[-1]] * (self.batch_size - n)  # fixed shapes: one compilation
      batch = {"tokens": np.stack([c[0] for c in chunk]), "mask": np.stack([c[1] for c in chunk]),
               "eoc": np.array([c[2] for c in chunk], np.int32)}
      with jax.set_mesh(self.mesh):
        arrays = sharding.global_batch(batch, self.mesh)
        s = self._score(self.params, arrays["tokens"], arrays["mask"], arrays["eoc"])
      out.append(np.asarray(jax.device_get(s), np.float64)[:n])
    return (np.concatenate(out) if out else np.zeros(0)) - self.offset


def main(argv):
  del argv
  f = flags.FLAGS
  with cli.user_errors("hh.pm.score"):
    rows = []
    with open(f.input) as fh:
      for n, line in enumerate(fh, 1):
        if line.strip():
          row = json.loads(line)
          if not isinstance(row.get("context"), str) or not isinstance(row.get("response"), str):
            raise ValueError(f"{f.input}:{n}: expected string keys 'context' and 'response'")
          rows.append(row)
    scores = Scorer(f.pm).score([r["context"] for r in rows], [r["response"] for r in rows])
    lines = [json.dumps({**r, "score": float(s)}) for r, s in zip(rows, scores)]
    if f.output:
      with open(f.output, "w") as fh:
        fh.write("\n".join(lines) + "\n")
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
