"""What each base LM knows: P(right answer) > P(a wrong one), and whether it expects the Human's
"That's not right." more after a wrong answer than after the right one — per family and size.

  python experiments/probe_lm.py      # reads the base LMs of fig. 7 (~2 min on 2 CPU cores)

This is the mechanism the world is built on (hh/sim/world.py): correctness is a matter of
memorised facts, so a PM can only judge answers its LM knows; larger LMs know more of the
Zipf tail. Printed, not plotted.
"""
import collections
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app

from experiments import common
from hh import sharding
from hh import tokenizer as tok_lib
from hh.lm import step as lm_step
from hh.models import DecoderLM, ModelConfig
from hh.sim import gold, responses
from hh.sim import world as W
from hh.train import build as build_lib

N_PER_FAMILY, LEN = 80, 96


def load(base: str):
  """(log-prob of ``cont`` after ``prefix``) function for one base LM."""
  with open(os.path.join(base, "config.json")) as f:
    cfg = ml_collections.ConfigDict(json.load(f))
  tok = tok_lib.Tokenizer.load(os.path.join(base, "lm", "tokenizer.model"))
  model = DecoderLM(ModelConfig.from_config(cfg.model, tok.vocab_size))
  mesh, rules = sharding.make_mesh(cfg.mesh), sharding.rules(cfg)
  with jax.set_mesh(mesh):
    x = jnp.zeros((1, LEN), jnp.int32)
    params = build_lib.inference_params(model, (x, x), os.path.join(base, "lm"), mesh, rules)
    log_probs = build_lib.jit_forward(functools.partial(lm_step.log_probs, model), mesh, rules)

  def lp(prefix: str, cont: str) -> float:
    a, b = tok.encode(prefix), tok.encode(prefix + cont)
    pad = LEN - len(b)
    with jax.set_mesh(mesh):
      out = np.asarray(log_probs(params, jnp.array([b + [0] * pad]),
                                 jnp.array([[1] * len(b) + [0] * pad])))[0]
    return float(out[len(a):len(b)].sum())
  return cfg.world.to_dict(), lp


def probe(base: str) -> dict[str, tuple[float, float]]:
  """{family: (knows, anticipates)} fractions over N_PER_FAMILY questions each."""
  wc, lp = load(base)
  world = W.make_world(wc["seed"], wc["n_countries"], wc["n_words"])
  rng = np.random.default_rng(5)
  out = collections.defaultdict(lambda: ([], []))
  for family in ("arithmetic", "fact", "string", "borderline"):
    for _ in range(N_PER_FAMILY):
      q, answer = W.helpful_question(world, rng, family)
      ctx = f"{W.HUMAN} {q}"
      wrong = responses._wrong(world, rng, gold.parse_request(world, ctx))
      right_r, wrong_r = f"The answer is {answer}.", f"The answer is {wrong}."
      knows = lp(ctx + W.ASSISTANT, " " + right_r) > lp(ctx + W.ASSISTANT, " " + wrong_r)

      def not_right(r):  # log-odds of the Human's "That's not right." over "Thanks!"
        p = ctx + W.ASSISTANT + " " + r + W.HUMAN
        return lp(p, " " + W.REACTIONS["wrong"]) - lp(p, " " + W.REACTIONS["right"])
      out[family][0].append(knows)
      out[family][1].append(not_right(wrong_r) > not_right(right_r))
  return {f: (float(np.mean(k)), float(np.mean(a))) for f, (k, a) in out.items()}


def main(argv):
  del argv
  for size in common.LADDER:
    r = probe(common.base(size))
    print(size, "knows / anticipates:",
          {f: f"{k:.2f} / {a:.2f}" for f, (k, a) in r.items()})


if __name__ == "__main__":
  app.run(main)
