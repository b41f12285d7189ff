"""The PM stage: PMP, then finetuning on comparisons, then evaluation (Bai et al. 2022, §3).

Each phase is one epoch over its ``(spec, weight)`` datasets (hh/sources.py; the weight is
λ on harmless comparisons, Bai et al. 2022, §3.1, App. A.2) on the shared build and loop. PMP starts from the
pretrained LM's trunk (``config.pm.init_from``); finetuning from PMP's PM (or the LM when PMP is
off). Resume order per phase: own checkpoint, then the previous phase, then fresh.

Outputs in ``workdir``: ``pmp/`` and ``finetune/`` (checkpoints, metrics with the learning curve:
val accuracy against ``pairs_seen``), ``eval_scores.npz`` (per test pair: mean-removed good/bad
scores, turns, test set, index), and ``pm_result.json`` (accuracies, the mean-removal offset, the
Bayes ceiling on synthetic data, the "shorter response" baseline).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from hh import io, sharding, sources
from hh import tokenizer as tok_lib
from hh.data import pipeline, tfds_io
from hh.models import ModelConfig, PreferenceModel
from hh.pm import eval as pm_eval
from hh.pm import score as pm_score
from hh.pm import step as pm_step
from hh.train import build as build_lib
from hh.train import checkpoint, loop
from hh.train import metrics as metrics_lib
from hh.train import state as state_lib


def load_tokenizer(config, lm_dir: str | None) -> tok_lib.Tokenizer:
  """``config.tokenizer.path``, else the tokenizer of the LM the PM starts from."""
  if config.tokenizer.path is not None:
    return tok_lib.Tokenizer.load(config.tokenizer.path)
  if lm_dir is None:
    raise ValueError("config.pm.init_from (the pretrained LM's workdir) or config.tokenizer.path "
                     "is needed: the PM uses the LM's tokenizer")
  return tok_lib.for_dir(lm_dir)


def eoc_from_marker(params: dict, eoc_id: int, marker_id: int) -> dict:
  """Params with the EOC embedding row set to the marker's row (config.pm.eoc_init, Bai et al. 2022, App. A.2)."""
  emb = params["trunk"]["embed"]["embedding"]                      # [V, D]
  trunk = {**params["trunk"], "embed": {"embedding": emb.at[eoc_id].set(emb[marker_id])}}
  return {**params, "trunk": trunk}


def start_params(fresh: dict, loaded: dict, origin: str, *, eoc_init: str, reset_head: bool,
                 eoc_id: int, marker_id: int) -> dict:
  """How a phase's params start from the run before it (pure; tested).

  ``origin="lm"``: the LM's trunk, a fresh (zero) head, and the EOC row per ``eoc_init``
  (``human_marker``: a copy of the "\\n\\nHuman:" row; ``random``: the LM's own EOC row).
  ``origin="pmp"``: PMP's trunk and, unless ``reset_head``, its head.
  """
  params = {**fresh, "trunk": loaded["trunk"]}
  if origin == "pmp":
    if not reset_head:
      params["head"] = loaded["head"]
    return params
  if eoc_init == "human_marker":
    return eoc_from_marker(params, eoc_id, marker_id)
  if eoc_init != "random":
    raise ValueError(f"config.pm.eoc_init={eoc_init!r}; allowed: human_marker, random")
  return params


def build(config, phase, mesh, vocab_size: int, steps: int) -> build_lib.Built:
  """A PM phase's model, optimizer and jitted update (shared with the benchmark)."""
  model = PreferenceModel(ModelConfig.from_config(config.model, vocab_size))
  tx = state_lib.make_optimizer(phase.optim, steps)
  example = (jnp.zeros((1, phase.seq_len), jnp.int32),) * 2 + (jnp.zeros((1,), jnp.int32),)
  return build_lib.build(model, tx, example, pm_step.pm_loss(model), pm_step.BATCH_NDIMS,
                         mesh=mesh, rules=sharding.rules(config), seed=config.seed,
                         max_replicated_fraction=config.max_replicated_fraction)


def _init_from(config, built, init: tuple[str, str], tok):
  """``initial_state``'s init_from: load the previous run's params, then ``start_params``."""
  path, origin = init
  want = {"trunk": built.abstract.params["trunk"]} if origin == "lm" else built.abstract.params
  want_sh = ({"trunk": built.shardings.params["trunk"]} if origin == "lm"
             else built.shardings.params)

  def init_fn(state):
    loaded = checkpoint.load_params(path, want, want_sh)
    start = jax.jit(lambda fresh, loaded: start_params(
        fresh, loaded, origin, eoc_init=config.pm.eoc_init,
        reset_head=config.pm.finetune.reset_head, eoc_id=tok.eoc_id, marker_id=tok.human_id),
        out_shardings=built.shardings.params)
    return build_lib.with_params(built, state, start(state.params, loaded))
  return init_fn


def run_phase(config, name: str, workdir: str, init: tuple[str, str] | None, tok, mesh,
              test_source, places: sources.Places) -> dict:
  """One phase (PMP or finetune): one epoch, periodic eval on ``test_source``."""
  phase = config.pm[name]
  phase_dir = os.path.join(workdir, name)
  source = sources.mixture(phase.datasets, places, phase.max_pairs)
  steps = len(source) // phase.batch_pairs * phase.epochs
  if steps < 1:
    raise ValueError(f"config.pm.{name}: {len(source)} pairs are fewer than one batch of "
                     f"{phase.batch_pairs}")
  built = build(config, phase, mesh, tok.vocab_size, steps)
  score = build_lib.jit_forward(pm_step.score_fn(built.model), mesh, built.rules)
  it = pipeline.Iterator(pipeline.make_loader(
      source, [pipeline.PairTokenizer(tok, phase.seq_len)], phase.batch_pairs, seed=config.seed,
      num_epochs=phase.epochs, by_process=False))
  mngr = checkpoint.manager(phase_dir, phase.loop.keep_ckpts, phase.loop.ckpt_every)
  state = build_lib.initial_state(built, mngr, it, _init_from(config, built, init, tok)
                                  if init is not None else None)
  writer = metrics_lib.Writer(phase_dir)
  writer.truncate_after(int(jax.device_get(state.step)))

  def evaluate(s):
    r = pm_score.score_pairs(score, s.params, test_source, tok, phase.seq_len,
                             4 * phase.batch_pairs, mesh)
    out = {"accuracy": pm_eval.accuracy(r["good"], r["bad"]),
           "pairs_seen": float(jax.device_get(s.step)) * phase.batch_pairs}
    for p in np.unique(r["part"]):
      sel = r["part"] == p
      out[f"accuracy_{int(p)}"] = pm_eval.accuracy(r["good"][sel], r["bad"][sel])
    return out

  settings = loop.Settings.from_config(phase.loop, steps=steps, progress=config.progress)
  state = loop.fit(state=state, train_step=built.train_step,
                   batches=lambda _: sharding.global_batch(
                       sharding.process_rows(pipeline.pm_pair_batch(next(it))), mesh),
                   data_state=it.state, evaluate=evaluate, settings=settings, mngr=mngr,
                   writer=writer, tokens_per_step=2 * phase.batch_pairs * phase.seq_len,
                   lr_fn=state_lib.lr_schedule(phase.optim, steps))
  mngr.close()
  writer.close()
  return {"state": state, "score": score, "steps": steps, "pairs": len(source),
          "lr": phase.optim.lr}


def train_and_evaluate(config, workdir: str, world_dir: str | None = None,
                       lm_dir: str | None = None) -> dict:
  """Trains and evaluates the PM. ``lm_dir``: the LM it starts from (``config.pm.init_from`` or
  a pipeline's LM stage, resolved by hh/stages.py; None: from scratch); ``world_dir``: a
  pipeline's own world, used when ``config.data_dirs.world`` is not set."""
  if config.pm.get("pmp_from"):
    if config.pm.pmp.datasets:
      raise ValueError(f"config.pm.pmp_from={config.pm.pmp_from!r} starts finetuning from a "
                       "finished PMP phase: config.pm.pmp.datasets must then be empty")
    if not io.isdir(os.path.join(config.pm.pmp_from, "checkpoints")):
      raise ValueError(f"config.pm.pmp_from={config.pm.pmp_from!r}: no checkpoints/ there (a PM "
                       "workdir's pmp/ folder is expected)")
  io.makedirs(workdir)
  places = sources.Places.from_config(config, workdir, world_dir)
  mesh = sharding.make_mesh(config.mesh)
  tok = load_tokenizer(config, lm_dir)
  test_source = sources.mixture([(s, 1.0) for s in config.pm.test_datasets], places)
  init = (lm_dir, "lm") if lm_dir is not None else None
  if config.pm.get("pmp_from"):  # finetuning from another run's finished PMP (Askell et al. 2021, PMP)
    init = (config.pm.pmp_from, "pmp")
  phases = {}
  with jax.set_mesh(mesh):
    for name in ("pmp", "finetune"):
      if name == "pmp" and not config.pm.pmp.datasets:
        continue
      phases[name] = run_phase(config, name, workdir, init, tok, mesh, test_source, places)
      init = (os.path.join(workdir, name), name)
    ft = phases["finetune"]
    r = pm_score.score_pairs(ft["score"], ft["state"].params, test_source, tok,
                             config.pm.finetune.seq_len, 4 * config.pm.finetune.batch_pairs,
                             mesh)

  def extras(index, key):
    first = test_source[int(index[0])] if len(index) else {}
    if key not in first:
      return None
    values = [test_source[int(i)][key] for i in index]
    return [tfds_io.text(v) for v in values] if isinstance(values[0], bytes | str) else \
        np.array(values)

  result = pm_eval.test_report(r, extras, config.pm.test_datasets)
  result |= {"tokenizer": tok.path,
             "phases": {k: {"steps": v["steps"], "pairs": v["pairs"], "lr": v["lr"]}
                        for k, v in phases.items()}}
  if config.pm.get("pmp_from"):
    result["pmp_from"] = config.pm.pmp_from
  if jax.process_index() == 0:
    offset = result["offset"]
    io.write_npz(os.path.join(workdir, "eval_scores.npz"), good=r["good"] - offset,
                 bad=r["bad"] - offset, turns=r["turns"], part=r["part"], index=r["index"])
    io.write_json(os.path.join(workdir, "pm_result.json"), result)  # last: marks a finished PM
  return result


def summary(result: dict) -> list[str]:
  lines = []
  for spec, r in result["by_test_set"].items():
    extra = (f"; {r['fraction_of_ceiling']:.1%} of the Bayes ceiling {r['bayes_ceiling']:.3f}"
             if "bayes_ceiling" in r else "")
    lines.append(f"pm: {spec} accuracy {r['accuracy']:.3f} on {r['pairs']} pairs; 'prefer "
                 f"the shorter response' {r['shorter_response_baseline']:.3f}{extra}")
  return lines
