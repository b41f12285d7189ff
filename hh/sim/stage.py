"""The world stage: build every hh_sim dataset into the workdir and measure the world.

``world/summary.json`` records the tranche sizes, the annotator's Bayes ceilings and expected
inter-annotator agreement on the base comparisons, the helpful–harmless correlation of the base
response model on harmful requests, and a sample conversation — all printed by the code and shown
in the README and the pipeline report.
"""
from __future__ import annotations

import os

import numpy as np

from hh import config_diff, io
from hh.data import tfds_io
from hh.sim import annotator, dataset, gold, responses
from hh.sim import world as W


def data_dir(workdir: str) -> str:
  return io.local_dir(workdir, "tfds")


def build(world_cfg: dict, workdir: str, name: str):
  """Builds (once) and returns the ``hh_sim/name`` builder; refuses a different world, naming
  every key (nested ones too, e.g. ``world.response_mix.wrong``) whose value differs."""
  builder = tfds_io.build(f"hh_sim/{name}", data_dir(workdir), dataset.HhSim, world=world_cfg)
  built = builder.info.metadata.get("world_hash")
  if built != dataset.world_hash(world_cfg):
    differ = config_diff.differing_keys(dict(builder.info.metadata.get("world", {})),
                                        dataset.canonical(world_cfg), prefix="world")
    raise ValueError(f"{builder.data_dir} was built from another config.world (differs in "
                     f"{', '.join(differ) or 'its version'}); use a new workdir or the same "
                     "config.world")
  return builder


def _scores(source, task: str) -> tuple[np.ndarray, np.ndarray]:
  rows = [source[i] for i in range(len(source))]
  return (np.array([r[f"chosen_{task}"] for r in rows], np.float64),
          np.array([r[f"rejected_{task}"] for r in rows], np.float64))


def harmful_correlation(world_cfg: dict, n: int = 2000) -> float:
  """Pearson correlation of (helpfulness, harmlessness) of base responses to harmful requests."""
  world = W.make_world(world_cfg["seed"], world_cfg["n_countries"], world_cfg["n_words"])
  rng = np.random.default_rng([world_cfg["seed"], 1234])
  pairs = []
  for _ in range(n):
    req = dataset._request(world, rng, world_cfg, "harmful")
    pairs.append(gold.scores(world, req.context, " " + responses.respond(
        world, rng, req.context, world_cfg["response_mix"])))
  h, g = np.array(pairs).T
  return float(np.corrcoef(h, g)[0, 1])


def run(world_cfg: dict, workdir: str) -> dict:
  """Builds all configs; writes and returns the world summary."""
  builders = {name: build(world_cfg, workdir, name) for name in dataset.CONFIGS}
  summary = {"tranches": {}, "ceilings": {}}
  for name, b in builders.items():
    summary["tranches"][name] = {s: b.info.splits[s].num_examples for s in b.info.splits}
  T = world_cfg["temperature"]
  for task in ("helpful", "harmless"):
    for split in ("train", "test"):
      s_c, s_r = _scores(tfds_io.source(builders[task], split), task)
      summary["ceilings"][f"{task}/{split}"] = {
          "bayes_ceiling": annotator.bayes_ceiling(s_c, s_r, T),
          "inter_annotator_agreement": annotator.inter_annotator_agreement(s_c, s_r, T),
          "label_agrees_with_gold": float(np.mean(s_c > s_r))}
  summary["helpful_harmless_correlation_on_harmful"] = harmful_correlation(world_cfg)
  helpful = tfds_io.source(builders["helpful"], "train")
  ex = next((helpful[i] for i in range(len(helpful)) if helpful[i]["num_human_turns"] >= 3),
            helpful[0])  # a multi-turn sample shows more of the format
  summary["sample"] = {"transcript_chosen": tfds_io.text(ex["chosen_transcript"]),
                       "rejected": tfds_io.text(ex["rejected"]),
                       "gold_chosen": [float(ex["chosen_helpful"]), float(ex["chosen_harmless"])],
                       "gold_rejected": [float(ex["rejected_helpful"]),
                                         float(ex["rejected_harmless"])]}
  io.write_json(os.path.join(workdir, "world", "summary.json"), summary)
  return summary
