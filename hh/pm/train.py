"""The PM stage: PMP, then finetuning on comparisons, then evaluation (SPEC §2).

Each phase is one epoch over its datasets (``"name/config:split"``; ``hh_sim/...`` from the
world built in ``config.world_workdir``, ``hh_rlhf/...`` from ``config.hh_rlhf_dir``), with the
pairwise loss weighted by λ = ``config.harmless_weight`` on harmless sets (SPEC §2.4). PMP starts
from the pretrained LM's trunk (``config.init_from``); finetuning from PMP's whole PM (or the LM
when PMP is off). Resume order per phase: own checkpoint, then the previous phase, then fresh.

Outputs in ``workdir``: ``pmp/`` and ``finetune/`` (checkpoints, metrics with the learning curve:
val accuracy against ``pairs_seen``), ``eval_scores.npz`` (per test pair: good/bad scores,
turns, test set, gold probabilities where known), and ``pm_result.json`` (accuracies, the
mean-removal offset, the Bayes ceiling on synthetic data, the "shorter response" baseline).
"""
from __future__ import annotations

import json
import os

import flax.linen as nn
import jax
import jax.experimental.multihost_utils
import jax.numpy as jnp
import numpy as np

from hh import sharding
from hh import tokenizer as tok_lib
from hh.data import pipeline, tfds_io
from hh.models import ModelConfig, PreferenceModel
from hh.pm import eval as pm_eval
from hh.pm import step as pm_step
from hh.train import checkpoint, loop
from hh.train import metrics as metrics_lib
from hh.train import state as state_lib


def open_dataset(spec: str, config, workdir: str, world_workdir: str | None):
  """``"hh_sim/helpful:test"`` → its random-access data source."""
  name, _, split = spec.partition(":")
  if name.startswith("hh_sim/"):
    if world_workdir is None:
      raise ValueError(f"{spec}: set config.world_workdir to the workdir where the world was "
                       "built (the pipeline's)")
    from hh.sim import stage as sim_stage
    builder = sim_stage.build(config.world.to_dict(), world_workdir, name.split("/")[1])
  elif name.startswith("hh_rlhf/"):
    builder = tfds_io.build(name, os.path.join(workdir, "tfds"), source_dir=config.hh_rlhf_dir)
  elif name.startswith("pmp/"):
    raise ValueError(f"{spec}: build PMP sets with hh/data/pmp.py from your files first")
  else:
    raise ValueError(f"dataset {spec!r}: expected hh_sim/..., hh_rlhf/... or pmp/...")
  return builder.as_data_source(split=split or "train")


def _sources(specs, config, workdir, world_workdir, max_pairs=None):
  sources = [open_dataset(s, config, workdir, world_workdir) for s in specs]
  weights = [config.harmless_weight if "harmless" in s else 1.0 for s in specs]
  source = pipeline.Concat(sources, weights)
  if max_pairs is not None:
    source = _Head(source, max_pairs)
  return source


class _Head:
  """The first n records of a source, spread evenly over its parts (a data-size ablation)."""

  def __init__(self, source, n: int):
    self.source = source
    self.idx = np.linspace(0, len(source) - 1, min(n, len(source))).round().astype(int)

  def __len__(self):
    return len(self.idx)

  def __repr__(self):
    return f"_Head({self.source!r}, {len(self.idx)})"

  def __getitem__(self, i):
    return self.source[int(self.idx[i])]


def load_tokenizer(config, lm_workdir: str | None) -> tok_lib.Tokenizer:
  if config.tokenizer.path is not None:
    return tok_lib.Tokenizer.load(config.tokenizer.path)
  if lm_workdir is None:
    raise ValueError("config.init_from (the pretrained LM's workdir) or config.tokenizer.path "
                     "is needed: the PM uses the LM's tokenizer")
  return tok_lib.Tokenizer.load(os.path.join(lm_workdir, "tokenizer.model"))


def _score_fn(model, rules):
  """``(params, batch) -> scores [2B]`` read at each row's EOC token."""
  def score(params, batch):
    with nn.logical_axis_rules(rules):
      return model.apply({"params": params}, batch["tokens"], batch["mask"], batch["eoc"])
  return score


def score_pairs(score, params, source, tok, seq_len: int, batch_pairs: int, mesh):
  """Scores every pair of a source: dict of good, bad [N] and per-pair fields."""
  loader = pipeline.make_loader(source, [pipeline.PairTokenizer(tok, seq_len)], batch_pairs,
                                seed=0, shuffle=False, num_epochs=1, drop_remainder=False)
  n_proc = jax.process_count()
  out = {k: [] for k in ("good", "bad", "turns", "part", "index")}
  for batch in loader:
    n = len(batch["index"])
    if n < batch_pairs // n_proc:  # pad the last batch by repeating its last row
      batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_pairs // n_proc - n, 0)])
               for k, v in batch.items()}
    stacked = pipeline.pm_pair_batch(batch)
    arrays = sharding.global_batch({k: stacked[k] for k in ("tokens", "mask", "eoc")}, mesh)
    s = np.asarray(jax.device_get(score(params, arrays))) if n_proc == 1 else \
        np.asarray(jax.experimental.multihost_utils.process_allgather(score(params, arrays)))
    half = len(s) // 2
    out["good"].append(s[:half][:n])
    out["bad"].append(s[half:][:n])
    out["turns"].append(batch["num_human_turns"][:n])
    out["part"].append(batch["part"][:n])
    out["index"].append(batch["index"][:n])
  return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}


def _extra(source, index: np.ndarray, key: str) -> np.ndarray | None:
  first = source[int(index[0])] if len(index) else {}
  if key not in first:
    return None
  return np.array([source[int(i)][key] for i in index])


def eoc_from_marker(params: dict, eoc_id: int, marker_id: int) -> dict:
  """Params with the EOC embedding row set to the marker's row (config.eoc_init, SPEC §2.1)."""
  emb = params["trunk"]["embed"]["embedding"]                      # [V, D]
  trunk = {**params["trunk"], "embed": {"embedding": emb.at[eoc_id].set(emb[marker_id])}}
  return {**params, "trunk": trunk}


def run_phase(config, phase, name: str, workdir: str, init: tuple[str, str] | None,
              tok, mesh, test_source, world_workdir: str | None) -> dict:
  """One phase (PMP or finetune): one epoch, periodic eval on ``test_source``."""
  phase_dir = os.path.join(workdir, name)
  source = _sources(phase.datasets, config, workdir, world_workdir, phase.max_pairs)
  steps = len(source) // phase.batch_pairs * phase.epochs
  if steps < 1:
    raise ValueError(f"config.{name}: {len(source)} pairs are fewer than one batch of "
                     f"{phase.batch_pairs}")
  optim = config.optim.copy_and_resolve_references()
  optim.lr = phase.lr_factor * config.optim.lr
  optim.schedule, optim.warmup_steps = phase.schedule, phase.warmup_steps
  model = PreferenceModel(ModelConfig.from_config(config.model, tok.vocab_size))
  tx = state_lib.make_optimizer(optim, steps)
  rules = sharding.rules(config)
  example = (jnp.zeros((1, phase.seq_len), jnp.int32),) * 2 + (jnp.zeros((1,), jnp.int32),)
  init_fn = state_lib.init_fn(model, tx, example, config.seed)
  abstract, shardings = state_lib.abstract_state(init_fn, mesh, rules)
  sharding.check_divisible(abstract.params, shardings.params)
  batch_sh = {k: sharding.batch_sharding(mesh, 1 if k in ("eoc", "weight") else 2)
              for k in ("tokens", "mask", "eoc", "weight")}
  train_step = jax.jit(pm_step.make_pm_train_step(model, tx, rules),
                       in_shardings=(shardings, batch_sh),
                       out_shardings=(shardings, sharding.replicated(mesh)), donate_argnums=0)
  score = jax.jit(_score_fn(model, rules), out_shardings=sharding.replicated(mesh))
  loader = pipeline.make_loader(source, [pipeline.PairTokenizer(tok, phase.seq_len)],
                                phase.batch_pairs, seed=config.seed, num_epochs=phase.epochs)
  it = pipeline.Iterator(loader)
  mngr = checkpoint.manager(phase_dir, config.train.keep_ckpts, config.train.ckpt_every)
  restored = checkpoint.restore_latest(mngr, abstract, shardings)
  if restored is not None:
    state, data_state = restored
    it.restore(data_state)
  else:
    state = state_lib.create_state(init_fn, shardings)
    if init is not None:
      path, origin = init  # origin: "lm" (trunk only) | "pmp" (trunk, head unless reset)
      trunk_only = origin == "lm" or config.finetune.reset_head
      want = {"trunk": abstract.params["trunk"]} if trunk_only else abstract.params
      want_sh = {"trunk": shardings.params["trunk"]} if trunk_only else shardings.params
      loaded = checkpoint.load_params(path, want, want_sh)
      params = {**state.params, **loaded}
      if origin == "lm" and config.eoc_init == "human_marker":
        params = jax.jit(eoc_from_marker, static_argnums=(1, 2),
                         out_shardings=shardings.params)(params, tok.eoc_id, tok.human_id)
      elif origin == "lm" and config.eoc_init != "random":
        raise ValueError(f"config.eoc_init={config.eoc_init!r}; allowed: human_marker, random")
      state = state.replace(params=params, opt_state=tx.init(params))
  writer = metrics_lib.Writer(phase_dir)
  writer.truncate_after(int(jax.device_get(state.step)))

  def evaluate(s):
    r = score_pairs(score, s.params, test_source, tok, phase.seq_len, 4 * phase.batch_pairs,
                    mesh)
    out = {"accuracy": pm_eval.accuracy(r["good"], r["bad"]),
           "pairs_seen": float(jax.device_get(s.step)) * phase.batch_pairs}
    for p in np.unique(r["part"]):
      out[f"accuracy_{int(p)}"] = pm_eval.accuracy(r["good"][r["part"] == p],
                                                   r["bad"][r["part"] == p])
    return out

  train_cfg = config.train.copy_and_resolve_references()
  train_cfg.steps, train_cfg.eval_every = steps, phase.eval_every
  train_cfg.eval_at = tuple(phase.eval_at)
  state = loop.fit(state=state, train_step=train_step,
                   next_batch=lambda: sharding.global_batch(
                       {k: v for k, v in pipeline.pm_pair_batch(next(it)).items()}, mesh),
                   data_state=it.state, evaluate=evaluate, train_cfg=train_cfg, mngr=mngr,
                   writer=writer, tokens_per_step=2 * phase.batch_pairs * phase.seq_len,
                   lr_fn=state_lib.lr_schedule(optim, steps))
  mngr.close()
  writer.close()
  return {"state": state, "score": score, "steps": steps, "pairs": len(source),
          "lr": optim.lr}


def train_and_evaluate(config, workdir: str, lm_workdir: str | None = None,
                       world_workdir: str | None = None) -> dict:
  """Trains and evaluates the PM; ``lm_workdir``/``world_workdir`` default to the config's
  ``init_from``/``world_workdir`` (the pipeline passes its own stage folders)."""
  os.makedirs(workdir, exist_ok=True)
  lm_workdir = lm_workdir or config.init_from
  world_workdir = world_workdir or config.world_workdir
  mesh = sharding.make_mesh(config.mesh)
  tok = load_tokenizer(config, lm_workdir)
  test_source = _sources(config.test_datasets, config, workdir, world_workdir)
  init = (lm_workdir, "lm") if lm_workdir is not None else None
  phases = {}
  with jax.set_mesh(mesh):
    if config.pmp.datasets:
      phases["pmp"] = run_phase(config, config.pmp, "pmp", workdir, init, tok, mesh,
                                test_source, world_workdir)
      init = (os.path.join(workdir, "pmp"), "pmp")
    ft = run_phase(config, config.finetune, "finetune", workdir, init, tok, mesh, test_source,
                   world_workdir)
    phases["finetune"] = ft
    r = score_pairs(ft["score"], ft["state"].params, test_source, tok,
                    config.finetune.seq_len, 4 * config.finetune.batch_pairs, mesh)
  return _finish(config, workdir, r, test_source, phases, tok)


def _finish(config, workdir, r, test_source, phases, tok) -> dict:
  """Mean removal, accuracies, ceilings and baselines → pm_result.json + eval_scores.npz."""
  offset = pm_eval.mean_removal_offset(np.concatenate([r["good"], r["bad"]]))
  result = {"accuracy": pm_eval.accuracy(r["good"], r["bad"]), "offset": offset,
            "tokenizer": tok.path,
            "test_pairs": int(len(r["good"])),
            "phases": {k: {"steps": v["steps"], "pairs": v["pairs"], "lr": v["lr"]}
                       for k, v in phases.items()}, "by_test_set": {}}
  for p, spec in enumerate(config.test_datasets):
    sel = r["part"] == p
    entry = {"accuracy": pm_eval.accuracy(r["good"][sel], r["bad"][sel]),
             "pairs": int(sel.sum())}
    p_chosen = _extra(test_source, r["index"][sel], "p_chosen")
    if p_chosen is not None:  # synthetic: the annotator's Bayes ceiling on these very pairs
      ceiling = float(np.mean(np.maximum(p_chosen, 1 - p_chosen)))
      entry |= {"bayes_ceiling": ceiling, "fraction_of_ceiling": entry["accuracy"] / ceiling}
    chosen = [tfds_io.text(test_source[int(i)]["chosen"]) for i in r["index"][sel]]
    rejected = [tfds_io.text(test_source[int(i)]["rejected"]) for i in r["index"][sel]]
    entry["shorter_response_baseline"] = float(np.mean(
        [len(c) < len(j) for c, j in zip(chosen, rejected)]))
    result["by_test_set"][spec] = entry
  if jax.process_index() == 0:
    np.savez(os.path.join(workdir, "eval_scores.npz"), good=r["good"] - offset,
             bad=r["bad"] - offset, turns=r["turns"], part=r["part"], index=r["index"])
    with open(os.path.join(workdir, "pm_result.json"), "w") as f:
      json.dump(result, f, indent=1)
  return result
