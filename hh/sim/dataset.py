"""Datasets drawn from the synthetic world, written through the same TFDS path as hh-rlhf.

Configs of the ``hh_sim`` builder (each from its own seed stream, so one seed gives the same
world and data bit for bit):

* ``lm`` — pretraining dialogues: one response-model answer per request (train/test); a
  ``reference_fraction`` of them are "reference" dialogues (helpful requests, every answer
  correct and concise) — the pretraining text that states the world's facts correctly, as the web
  does for real LMs; the rest answer with the mediocre response model. The Human often reacts to
  an answer ("That's not right.", hh/sim/world.py), also after the last one, and reacts as the
  asker to answers to harmful requests too (thanks for compliance, "Why not?" after a refusal);
* ``helpful`` / ``harmless`` — base-tranche comparisons (hh-rlhf schema plus gold scores and the
  annotator's probability): two base responses to one request, labelled by the simulated
  annotator under the helpful task (helpful families) or the red-team task (harmful requests,
  and a ``harmless_borderline`` share of attempts on borderline ones, most of them ties);
* ``pmp`` — PMP-style pairs (a coarser, noisier annotator), binarized GOOD/BAD as in Askell et al. 2021, PMP.
  Like community votes, which punish harmful posts as well as unhelpful ones, each pair is judged
  by the objective its request is about: harmlessness on harmful requests, helpfulness otherwise;
* ``prompts`` — RL prompts ending on a Human turn (train/test; helpful and harmful);
* ``hhh`` — the HHH-style few-shot prompt for context distillation (one example).
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import tensorflow_datasets as tfds

from hh.data import pmp
from hh.sim import annotator, gold, responses
from hh.sim import world as W

CONFIGS = ("lm", "helpful", "harmless", "pmp", "prompts", "hhh")
_STREAM = {name: i + 1 for i, name in enumerate(CONFIGS)}


def turns_of(context: str) -> list[dict]:
  return [{"speaker": s, "text": t} for s, t in gold._turns(context)]


def _family(rng: np.random.Generator, harmful_fraction: float, families=W.HELPFUL_FAMILIES) -> str:
  return "harmful" if rng.random() < harmful_fraction else str(rng.choice(families))


def _n_turns(rng: np.random.Generator, cfg) -> int:
  p = np.asarray(cfg["turns_p"], np.float64)
  return int(rng.choice(len(p), p=p / p.sum())) + 1


REFERENCE_MIX = {"correct": 1.0, "partial": 0.0, "wrong": 0.0, "verbose": 0.0, "refuse": 0.0,
                 "comply": 0.0, "refuse_offer": 1.0, "refuse_bare": 0.0, "evade": 0.0}


def _request(world, rng, cfg, family, mix=None) -> W.Request:
  mix = mix or cfg["response_mix"]
  return W.sample_request(world, rng, family, _n_turns(rng, cfg),
                          lambda ctx: responses.respond(world, rng, ctx, mix),
                          lambda ctx, a: gold.reaction(world, rng, ctx, a, cfg["react_p"]))


def _response_pair(world: W.World, rng: np.random.Generator, cfg, family: str):
  """One request of ``family`` and two base responses to it, with their gold (helpful,
  harmless) scores: (request, a, b, g_a, g_b)."""
  req = _request(world, rng, cfg, family)
  a = responses.respond(world, rng, req.context, cfg["response_mix"])
  b = responses.respond(world, rng, req.context, cfg["response_mix"])
  return req, a, b, gold.scores(world, req.context, " " + a), gold.scores(world, req.context,
                                                                            " " + b)


def _comparison_family(rng: np.random.Generator, cfg, task: str) -> str:
  """The request family of one base comparison of ``task`` (the red-team task: harmful requests
  and a ``harmless_borderline`` share of borderline ones)."""
  if task == "harmless":
    return "borderline" if rng.random() < cfg["harmless_borderline"] else "harmful"
  return str(rng.choice(W.HELPFUL_FAMILIES))


def base_response_scores(world_cfg, task: str, n: int = 2000) -> np.ndarray:
  """The gold score under ``task`` [2n] of both base responses of ``n`` comparisons drawn as the
  ``task`` set draws them, *before* the annotator drops its unsure ties (the set itself holds
  only kept pairs): the quality of what the base tranche's comparisons were made from. From its
  own seed stream, so the datasets are untouched."""
  cfg = dict(world_cfg)
  world = W.make_world(cfg["seed"], cfg["n_countries"], cfg["n_words"])
  rng = np.random.default_rng([cfg["seed"], _STREAM[task], 1])
  col = 0 if task == "helpful" else 1
  out = []
  for _ in range(n):
    _, _, _, ga, gb = _response_pair(world, rng, cfg, _comparison_family(rng, cfg, task))
    out += [ga[col], gb[col]]
  return np.asarray(out, np.float64)


def comparison(world: W.World, rng: np.random.Generator, cfg, family: str, task: str,
               temperature: float) -> dict | None:
  """Two base responses to one request, labelled by the annotator; None if "unsure"."""
  req, a, b, ga, gb = _response_pair(world, rng, cfg, family)
  col = 0 if task == "helpful" else 1
  a_wins, kept = annotator.annotate(np.array([ga[col]]), np.array([gb[col]]), temperature,
                                    cfg["tie_margin"], rng)
  if not kept[0]:
    return None
  (chosen, g_c), (rejected, g_r) = ((a, ga), (b, gb)) if a_wins[0] else ((b, gb), (a, ga))
  p_chosen = float(annotator.prefer_probability(g_c[col], g_r[col], temperature))
  ctx = req.context
  return {"context": turns_of(ctx), "context_text": ctx, "chosen": " " + chosen,
          "rejected": " " + rejected, "chosen_transcript": ctx + W.ASSISTANT + " " + chosen,
          "rejected_transcript": ctx + W.ASSISTANT + " " + rejected,
          "num_human_turns": ctx.count(W.HUMAN), "subset": f"sim-{task}", "family": family,
          "chosen_helpful": g_c[0], "chosen_harmless": g_c[1], "rejected_helpful": g_r[0],
          "rejected_harmless": g_r[1], "p_chosen": p_chosen}


def hhh_prompt(world: W.World) -> str:
  """A few-shot prompt of exemplary exchanges (correct, concise; polite refusal with an offer)."""
  rng = np.random.default_rng([world.seed, 99])
  shots = []
  for family in ("arithmetic", "fact", "harmful", "string", "borderline"):
    if family == "harmful":
      q = W.harmful_request(world, rng)
    else:
      q, _ = W.helpful_question(world, rng, family)
    ctx = f"{W.HUMAN} {q}"
    style = "refuse_offer" if family == "harmful" else "correct"
    shots.append(ctx + f"{W.ASSISTANT} " + responses.respond(world, rng, ctx, style=style))
  header = ("Below are conversations with an AI assistant that is helpful, honest and harmless: "
            "it answers correctly and briefly, and politely declines harmful requests while "
            "offering legitimate help.")
  return header + "".join(shots)


def generate(name: str, world_cfg) -> dict[str, list[dict]]:
  """All examples of one config, split into train/test (pure function of the config)."""
  cfg = dict(world_cfg)
  world = W.make_world(cfg["seed"], cfg["n_countries"], cfg["n_words"])
  rng = np.random.default_rng([cfg["seed"], _STREAM[name]])
  out: list[dict] = []
  if name == "hhh":
    return {"train": [{"text": hhh_prompt(world)}]}
  if name == "lm":
    for _ in range(cfg["lm_conversations"]):
      reference = rng.random() < cfg["reference_fraction"]
      mix = REFERENCE_MIX if reference else cfg["response_mix"]
      family = _family(rng, 0.0 if reference else cfg["harmful_fraction"])
      req = _request(world, rng, cfg, family, mix)
      answer = responses.respond(world, rng, req.context, mix)
      closing = gold.reaction(world, rng, req.context, answer, cfg["react_p"])
      out.append({"text": req.context + W.ASSISTANT + " " + answer +
                  (f"{W.HUMAN} {closing}" if closing else "")})
  elif name in ("helpful", "harmless"):
    task = name
    while len(out) < cfg[f"{name}_pairs"]:
      family = _comparison_family(rng, cfg, task)
      ex = comparison(world, rng, cfg, family, task, cfg["temperature"])
      if ex is not None:
        out.append(ex)
  elif name == "pmp":
    while len(out) < 2 * cfg["pmp_pairs"]:
      family = _family(rng, cfg["harmful_fraction"])
      task = "harmless" if family == "harmful" else "helpful"
      ex = comparison(world, rng, cfg, family, task, cfg["pmp_temperature"])
      if ex is None:
        continue
      for ctx, chosen, rejected in pmp.binarize(ex["context_text"], ex["chosen"].strip(),
                                                ex["rejected"].strip()):
        out.append({k: ex[k] for k in ("context", "context_text", "num_human_turns", "family")} |
                   {"chosen": " " + chosen, "rejected": " " + rejected,
                    "chosen_transcript": ctx + W.ASSISTANT + " " + chosen,
                    "rejected_transcript": ctx + W.ASSISTANT + " " + rejected,
                    "subset": "sim-pmp"})
  elif name == "prompts":
    for _ in range(cfg["prompts"]):
      family = _family(rng, cfg["harmful_fraction"])
      ctx = _request(world, rng, cfg, family).context
      out.append({"context": turns_of(ctx), "context_text": ctx, "family": family,
                  "num_human_turns": ctx.count(W.HUMAN), "harmful": family == "harmful"})
  else:
    raise ValueError(f"unknown hh_sim config {name!r}; allowed: {', '.join(CONFIGS)}")
  n_test = int(round(len(out) * cfg["test_fraction"]))
  return {"train": out[n_test:], "test": out[:n_test]}


def _features(name: str) -> tfds.features.FeaturesDict:
  text = tfds.features.Text
  turns = tfds.features.Sequence({"speaker": text(), "text": text()})
  if name in ("lm", "hhh"):
    return tfds.features.FeaturesDict({"text": text()})
  if name == "prompts":
    return tfds.features.FeaturesDict({"context": turns, "context_text": text(),
                                       "family": text(), "num_human_turns": np.int32,
                                       "harmful": np.bool_})
  feats = {"context": turns, "context_text": text(), "chosen": text(), "rejected": text(),
           "chosen_transcript": text(), "rejected_transcript": text(),
           "num_human_turns": np.int32, "subset": text(), "family": text()}
  if name != "pmp":
    feats |= {k: np.float32 for k in ("chosen_helpful", "chosen_harmless", "rejected_helpful",
                                      "rejected_harmless", "p_chosen")}
  return tfds.features.FeaturesDict(feats)


def canonical(world_cfg) -> dict:
  """The world config as plain JSON values (tuples → lists), nested dicts included."""
  return json.loads(json.dumps(dict(world_cfg), sort_keys=True))


def world_hash(world_cfg) -> str:
  """The world's identity: a hash of the whole resolved config.world (every key, nested too)."""
  return hashlib.sha256(json.dumps(canonical(world_cfg), sort_keys=True).encode()).hexdigest()


class HhSim(tfds.core.GeneratorBasedBuilder):
  """The synthetic world's datasets; ``world`` (a dict of ``config.world``) fixes everything."""

  VERSION = tfds.core.Version("1.2.0")
  RELEASE_NOTES = {
      "1.0.0": "First release.",
      "1.1.0": "PMP pairs judge a harmful request by harmlessness (before: by helpfulness).",
      "1.2.0": "The Human also reacts to answers to harmful requests (LM corpus only): thanks "
               "for compliance, 'Why not?' after a refusal.",
  }
  BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=n) for n in CONFIGS]

  def __init__(self, *, world: dict, **kwargs):
    self.world_cfg = dict(world)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    return tfds.core.DatasetInfo(builder=self, features=_features(self.builder_config.name),
                                 metadata=tfds.core.MetadataDict(), disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    splits = generate(self.builder_config.name, self.world_cfg)
    self.info.metadata["world"] = canonical(self.world_cfg)
    self.info.metadata["world_hash"] = world_hash(self.world_cfg)
    return {s: self._generate_examples(rows) for s, rows in splits.items() if rows}

  def _generate_examples(self, rows):
    for i, row in enumerate(rows):
      yield i, row
