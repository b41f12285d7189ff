"""The PPO stage (Bai et al. 2022, §4.1): π0 trained against the PM with reward r_PM − λ_KL·KL(π‖π0).

  python -m hh.main --config=configs/ppo.py --workdir=runs/ppo \
      --config.ppo.init_from=runs/pipeline/cd --config.ppo.pm=runs/pipeline/pm \
      --config.data_dirs.world=runs/pipeline

One iteration: a batch of training prompts (the harmful share from config) → the sampler (the
policy's own compiled model and params) → scores: the PM at the response's EOC (mean-removed),
π0's log-probs and the values on the response positions → per-token rewards and GAE
(hh/ppo/step.py) → the one jitted update. Everything a bit-exact resume needs is in the
checkpoint: policy, value, both optimizer states, the KL coefficient and the iteration count
(which fixes the prompts and the sampling keys of every later iteration).

Metrics per iteration (``metrics.jsonl``, "train"): the PPO losses and statistics, and of the
rollout's samples: PM score (all, helpful and harmful requests), the scores of the same samples
under each test PM of ``config.ppo.test_pms`` (``test_pm_score/<k>``: Figs. 4, 13, 33), gold
helpfulness (helpful requests) and harmlessness (harmful ones), KL summed per response and its √,
length, end-of-turn and refusal rates, and the value's explained variance of the rollout's
returns. Every ``eval_every`` iterations ("val"): gold scores and
the PM's scores (by request kind: Fig. 14) of samples on held-out prompts, and the policy's mean
log-p accuracy on the comparison sets ``config.ppo.logp_sets`` (Fig. 34 during RL, Bai et al. 2022, §4.5).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from hh import io
from hh import tokenizer as tok_lib
from hh import workdir as wd
from hh.models import ModelConfig, ValueModel
from hh.policy import evaluate as eval_lib
from hh.policy import policy as policy_lib
from hh.policy import sample as sample_lib
from hh.ppo import step as ppo
from hh.sim import gold
from hh.sim import world as W
from hh.train import build as build_lib
from hh.train import checkpoint, loop
from hh.train import metrics as metrics_lib
from hh.train import state as state_lib
from hh.train.state import TrainState


def comparisons(spec: str, places, max_pairs: int) -> list[tuple[str, str, str]]:
  """The first ``max_pairs`` (context, chosen, rejected) texts of a comparison set, the responses
  as they follow ``"\n\nAssistant:"`` (for ``evaluate.logp_accuracy``)."""
  from hh import sources
  from hh.data import tfds_io
  src = sources.open_split(spec, places)
  rows = [src[i] for i in range(min(len(src), max_pairs))]
  return [(tfds_io.text(r["context_text"]), tfds_io.text(r["chosen"]),
           tfds_io.text(r["rejected"])) for r in rows]


def response_scores(scorer, same_tokenizer: bool, tok, contexts: list[str],
                    bodies: list[list[int]]) -> np.ndarray:
  """Mean-removed PM scores [R] of responses after their contexts. ``bodies``: each response's
  ids in the policy's tokenizer ``tok``, without the turn-ending token. A PM that shares the
  tokenizer scores the policy's own ids ("\n\nAssistant:" piece + body); another scores the
  decoded text, written as hh-rlhf writes a response (a space after "Assistant:")."""
  if same_tokenizer:
    return scorer.score_ids(tok.encode_batch(contexts), [[tok.assistant_id] + b for b in bodies])
  return scorer.score(contexts, [" " + tok.decode(b).strip() for b in bodies])


def batch_rows(iteration: int, families: np.ndarray, size: int, harmful_fraction: float,
               seed: int) -> np.ndarray:
  """The prompt indices of one iteration: round(size·h) harmful and the rest helpful, drawn
  without replacement from an RNG seeded by (seed, iteration) — a pure function of the iteration,
  so a resumed run sees the same prompts."""
  rng = np.random.default_rng([seed, 31, iteration])
  harmful = np.flatnonzero(families == "harmful")
  helpful = np.flatnonzero(families != "harmful")
  n_h = int(round(size * harmful_fraction))
  if n_h > len(harmful) or size - n_h > len(helpful):
    raise ValueError(f"config.ppo.rollout_batch={size} with harmful_fraction={harmful_fraction} "
                     f"needs {n_h} harmful and {size - n_h} helpful prompts; the set has "
                     f"{len(harmful)} and {len(helpful)}")
  return np.concatenate([rng.choice(harmful, n_h, replace=False),
                         rng.choice(helpful, size - n_h, replace=False)])


def run(config, workdir: str, pi0_dir: str, pm_dir: str, world_dir: str | None,
        test_pm_dir: str | None = None) -> dict:
  """``test_pm_dir``: a held-out PM (a pipeline's test_pm stage) that scores every rollout and
  evaluation beside ``config.ppo.test_pms``; without a gold annotator (real prompts) it is the
  evaluation."""
  from hh import sources
  from hh.pm import score as pm_score
  cfg = config.ppo
  io.makedirs(workdir)
  places = sources.Places.from_config(config, workdir, world_dir)
  world = (W.make_world(config.world.seed, config.world.n_countries, config.world.n_words)
           if sources.has_gold(cfg.prompts) else None)
  longest = cfg.get("prompt_max_chars")
  contexts, families = sources.prompts(cfg.prompts, places, max_chars=longest)
  test_ctx, test_fam = sources.prompts(cfg.eval_prompts, places, cfg.eval_max_prompts, longest)
  logp_sets = {spec: comparisons(spec, places, cfg.logp_max_pairs)  # (a config saved before
               for spec in cfg.get("logp_sets", ())}                 # the key: none)
  pi0 = policy_lib.load(pi0_dir, "pi0")
  tok, mesh, rules, model = pi0.tok, pi0.mesh, pi0.rules, pi0.model
  scorer = pm_score.Scorer(pm_dir)
  if not tok_lib.same(scorer.tok, tok):
    raise ValueError(f"config.ppo.pm={pm_dir!r}: the PM's tokenizer differs from the policy's; "
                     "PPO scores the policy's own tokens")
  # Figs. 4, 13, 33 (Bai et al. 2022, §4.2): PMs that only score the rollouts, on the policy's
  # tokens when they share its tokenizer, else on the decoded text
  test_pms = [pm_score.Scorer(d) for d in (*cfg.get("test_pms", ()),
                                           *([test_pm_dir] if test_pm_dir else []))]
  test_pms = [(t, tok_lib.same(t.tok, tok)) for t in test_pms]
  if cfg.max_new_tokens >= scorer.seq_len:
    raise ValueError(f"config.ppo.max_new_tokens={cfg.max_new_tokens} is not shorter than the "
                     f"PM's context ({scorer.seq_len} tokens, {pm_dir}); allowed: < "
                     f"{scorer.seq_len}")
  sampling = sample_lib.SamplingConfig(
      max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
      stop_ids=sample_lib.end_of_turn_ids(tok), cache_block=config.sampling.cache_block)
  sampler = sample_lib.Sampler(model, mesh, rules, sampling, config.sampling.buckets)
  rows_per_call = min(config.sampling.batch_size, cfg.rollout_batch)
  # (a π0 of another shape than config.model is refused by hh/validate.py before this)
  value_model = (None if cfg.value_init == "shared"  # a head on the policy's trunk
                 else ValueModel(ModelConfig.from_config(config.model, tok.vocab_size)))
  steps = cfg.loop.steps
  tx = state_lib.make_optimizer(cfg.optim, steps * cfg.epochs * cfg.minibatches)
  n = cfg.max_new_tokens

  with jax.set_mesh(mesh):
    ref_params = pi0.params
    value_params = initial_value_params(cfg.value_init, scorer.params, ref_params)

    def fresh(pol, val) -> ppo.PPOState:  # π0's params copied: the update donates the state
      mk = lambda p, s: TrainState(step=jnp.zeros((), jnp.int32),  # noqa: E731
                                   params=jax.tree.map(jnp.copy, p), opt_state=tx.init(p),
                                   rng=jax.random.PRNGKey(s))
      return ppo.PPOState(step=jnp.zeros((), jnp.int32), policy=mk(pol, config.seed),
                          value=mk(val, config.seed + 1), kl_coef=jnp.float32(cfg.kl_coef))

    mngr = checkpoint.manager(workdir, cfg.loop.keep_ckpts, cfg.loop.ckpt_every)
    state = build_lib.initial_state(build_lib.state_spec(fresh, ref_params, value_params), mngr)

    ref_lp_fn = build_lib.jit_forward(lambda p, t, m: ppo.response_log_probs(
        model, p, t, m, n, cfg.temperature), mesh, rules)
    values_fn = build_lib.jit_forward(
        lambda p, t, m: ppo.response_values(model, value_model, p, t, m, n), mesh, rules)

    @jax.jit
    def advantages(logp, ref_lp, resp, score, finished, values, kl_coef):
      rewards, kl = ppo.token_rewards(logp, ref_lp, resp, score, kl_coef, finished,
                                      cfg.eot_penalty)
      adv, ret = ppo.gae(rewards, values, resp, cfg.gamma, cfg.lam)
      return adv, ret, kl.sum(-1), ppo.explained_variance(values, ret, resp)

    update = jax.jit(ppo.make_ppo_update(
        model, value_model, tx, tx, epochs=cfg.epochs, minibatches=cfg.minibatches,
        clip_eps=cfg.clip_eps, vf_clip=cfg.vf_clip, vf_coef=cfg.vf_coef,
        temperature=cfg.temperature, axis_rules=rules), donate_argnums=0)

    def rollout(state: ppo.PPOState) -> dict:
      it = int(jax.device_get(state.step))
      rows = batch_rows(it, families, cfg.rollout_batch, cfg.harmful_fraction, config.seed)
      ctx = [contexts[i] for i in rows]
      ids = tok.encode_batch([c + tok_lib.ASSISTANT for c in ctx])
      p_len = sample_lib.bucket(max(len(r) for r in ids), config.sampling.buckets)
      prompt, pmask = policy_lib.left_padded(ids, p_len)
      # config.sampling.batch_size rows per sampler call (its KV cache and prefill activations
      # scale with them; at 52B a whole 512-row rollout does not fit, hh.plan); row ids are
      # global, so the chunking does not change any row's draws
      out = sampler(state.policy.params, prompt, pmask, np.arange(len(rows)) + it * len(rows),
                    jax.random.fold_in(jax.random.PRNGKey(config.seed), it), rows_per_call)
      tokens = np.concatenate([prompt, out["tokens"]], 1)
      mask = np.concatenate([pmask, out["mask"]], 1).astype(np.int32)
      bodies = response_bodies(out["tokens"], out["mask"], sampling.stop_ids)
      score = response_scores(scorer, True, tok, ctx, bodies)
      ref_lp = ref_lp_fn(ref_params, tokens, mask)
      values = values_fn((state.policy.params, state.value.params), tokens, mask)
      resp = out["mask"].astype(np.float32)
      adv, ret, kl, ev = advantages(out["logp"], ref_lp, resp, jnp.asarray(score, jnp.float32),
                                    out["finished"], values, state.kl_coef)
      fam = families[rows]
      helpful, harmful = fam != "harmful", fam == "harmful"
      kl = np.asarray(kl, np.float64)
      stats = {"pm_score": (score.sum(), len(score)),
               "pm_score_helpful": (score[helpful].sum(), helpful.sum()),
               "pm_score_harmful": (score[harmful].sum(), harmful.sum()),
               "kl": (kl.sum(), len(kl)),
               "sqrt_kl": (np.sqrt(np.maximum(kl, 0)).sum(), len(kl)),
               "length": (out["length"].sum(), len(rows)),
               "end_of_turn": (out["finished"].sum(), len(rows)),
               # the rollout's values against its returns (1: the value predicts them)
               "value_explained_variance": (float(ev), 1)}
      if world is not None:
        texts = [tok.decode(b).strip() for b in bodies]
        g = eval_lib.gold_scores(world, ctx, texts)
        refused = np.array([gold.is_refusal(t) for t in texts], np.float32)
        stats |= {"gold_helpful": (g[helpful, 0].sum(), helpful.sum()),
                  "gold_harmless": (g[harmful, 1].sum(), harmful.sum()),
                  "refusal_rate_harmful": (refused[harmful].sum(), harmful.sum()),
                  "refusal_rate_helpful": (refused[helpful].sum(), helpful.sum())}
      for k, (test_pm, same_tok) in enumerate(test_pms):
        t = response_scores(test_pm, same_tok, tok, ctx, bodies)
        stats[f"test_pm_score/{k}"] = (t.sum(), len(t))
      flat = {}
      for k, (total, count) in stats.items():
        flat[f"{k}_sum"], flat[f"{k}_count"] = jnp.float32(total), jnp.float32(count)
      return {"rollout": {"tokens": jnp.asarray(tokens), "mask": jnp.asarray(mask),
                          "resp_mask": jnp.asarray(resp), "logp_old": jnp.asarray(out["logp"]),
                          "values_old": values, "advantages": adv, "returns": ret},
              "stats": flat}

    def train_step(state, batch):
      state, m = update(state, batch["rollout"])
      stats = batch["stats"]
      state = state.replace(kl_coef=ppo.next_kl_coef(
          state.kl_coef, stats["kl_sum"] / stats["kl_count"], cfg.rollout_batch,
          cfg.get("kl_target"), cfg.get("kl_horizon", 10_000.0)))
      # (a copy: the next update donates the state, and the loop keeps metrics across steps)
      return state, {**m, **stats, "kl_coef_sum": jnp.array(state.kl_coef, copy=True),
                     "kl_coef_count": jnp.float32(1)}

    evaluated = {}  # step → metrics: the loop's evaluation at the last step is also "after"

    def evaluate(state) -> dict:
      step = int(jax.device_get(state.step))  # the samples depend on the params and seed only
      if step not in evaluated:
        current = policy_lib.Policy("ppo", model, state.policy.params, tok, mesh, rules)
        s = policy_lib.generate(current, test_ctx, 1, sampling, config.seed + 7,
                                config.sampling.batch_size, config.sampling.buckets)
        m = eval_lib.policy_metrics(world, s.contexts, s.texts, list(test_fam), s.length,
                                    s.finished)
        # Fig. 14 (Bai et al. 2022, §4.4): the PM's scores of held-out samples, by request kind
        bodies = response_bodies(s.tokens, s.mask, sampling.stop_ids)
        pm = scorer.score_ids(tok.encode_batch(s.contexts),
                              [[tok.assistant_id] + b for b in bodies])
        for kind, sel in (("helpful", test_fam != "harmful"), ("harmful", test_fam == "harmful")):
          m[f"pm_score_{kind}"] = eval_lib.mean_se(pm[sel])
        # the held-out PMs' scores of the same samples (the evaluation without a gold annotator)
        for k, (test_pm, same_tok) in enumerate(test_pms):
          m[f"test_pm_score/{k}"] = eval_lib.mean_se(response_scores(
              test_pm, same_tok, tok, s.contexts, bodies))
        for spec, rows in logp_sets.items():  # Fig. 34 during RL (Bai et al. 2022, §4.5)
          m[f"logp_accuracy/{spec}"] = eval_lib.logp_accuracy(
              current, rows, config.sampling.batch_size, cfg.logp_max_tokens)
        out = {k: v["mean"] for k, v in m.items() if isinstance(v, dict)}
        evaluated[step] = out | {f"{k}_se": v["se"] for k, v in m.items() if isinstance(v, dict)}
      return dict(evaluated[step])

    writer = metrics_lib.Writer(workdir)
    writer.truncate_after(int(jax.device_get(state.step)))
    settings = loop.Settings.from_config(cfg.loop, progress=config.progress)
    start_path = os.path.join(workdir, "ppo_start.json")
    if not io.exists(start_path):  # π0's held-out evaluation, kept across a resume
      before = evaluate(state)
      if jax.process_index() == 0:
        io.write_json(start_path, before)
    state = loop.fit(state=state, train_step=train_step, batches=rollout, data_state=dict,
                     evaluate=evaluate, settings=settings, mngr=mngr, writer=writer,
                     tokens_per_step=cfg.rollout_batch * n)
    after = evaluate(state)
    mngr.close()
    if int(jax.device_get(state.step)) == settings.steps:  # not when stopped early (stop_at)
      export_policy(os.path.join(workdir, "policy"), state.policy.params, settings.steps, config,
                    tok)
  writer.close()
  before = io.read_json(start_path)
  result = {"step": int(jax.device_get(state.step)), "before": before, "after": after,
            "eval_prompts": len(test_ctx), "policy": os.path.join(workdir, "policy")}
  if jax.process_index() == 0:
    io.write_json(os.path.join(workdir, "ppo_result.json"), result)
  return result


def initial_value_params(value_init: str, pm_params: dict, policy_params: dict) -> dict:
  """The value model's starting params: the PM's trunk and head (``pm``, §4.1's (Bai et al. 2022, §4.1) choice;
  the PM must be of the policy's shape), π0's trunk with a zero head (``policy``: a PM of any
  size, e.g. the largest of a ladder), or a zero head alone on the policy's own trunk
  (``shared``: one trunk trained by both losses, half the training FLOPs)."""
  if value_init == "pm":
    shapes = [jax.tree.map(jnp.shape, p["trunk"]) for p in (pm_params, policy_params)]
    if shapes[0] != shapes[1]:
      raise ValueError("config.ppo.value_init='pm' needs a PM of the policy's shape (config.ppo.pm "
                       "is another size); allowed: a PM of the policy's size, or value_init="
                       "'policy'")
    return {"trunk": pm_params["trunk"], "head": pm_params["head"]}
  if value_init in ("policy", "shared"):
    d = policy_params["trunk"]["embed"]["embedding"].shape[-1]
    kernel = pm_params["head"]["kernel"]
    head = {"kernel": jnp.zeros((d,), kernel.dtype), "bias": jnp.zeros((), kernel.dtype)}
    return {"head": head} if value_init == "shared" else {"trunk": policy_params["trunk"],
                                                          "head": head}
  raise ValueError(f"config.ppo.value_init={value_init!r}; allowed: pm, policy, shared")


def response_bodies(tokens: np.ndarray, mask: np.ndarray, stop_ids) -> list[list[int]]:
  """[R, N] sampled ids and response mask → each row's response ids without its turn-ending
  token(s): what the PM scores after the "\n\nAssistant:" piece."""
  stops = {int(t) for t in stop_ids}
  return [[int(t) for t, m in zip(r, mk) if m and int(t) not in stops]
          for r, mk in zip(tokens, mask)]


def export_policy(out: str, params, step: int, config, tok):
  """The trained policy as an LM workdir (``config.json``, the tokenizer, a checkpoint of
  ``{"params": ...}``) that ``policy.load``, the evaluation CLI and ``hh.ood`` read like any LM."""
  if io.exists(os.path.join(out, "config.json")):
    return  # exported by an earlier run that stopped after it (the checkpoint is complete)
  mngr = checkpoint.manager(out, 1, 1)
  checkpoint.save(mngr, step, {"params": params}, {}, force=True)
  mngr.wait_until_finished()
  mngr.close()
  if jax.process_index() == 0:
    tok.save(out)
    wd.write_config(config, out)  # last: its presence marks a complete export


def summary(result: dict) -> list[str]:
  b, a = result["before"] or {}, result["after"]
  keys = ("gold_helpful", "gold_harmless", "needless_refusal_rate_borderline")
  if "gold_helpful" not in a:  # no gold annotator: the PMs' scores of the held-out samples
    keys = tuple(k for k in a if k.startswith(("pm_score_", "test_pm_score/"))
                 and not k.endswith("_se") and a[k] == a[k])
  nan = float("nan")

  def ms(m, k):
    return f"{m.get(k, nan):.3f} ± {m.get(k + '_se', nan):.3f}"
  return [f"ppo: {result['step']} iterations; on {result['eval_prompts']} held-out prompts, π0 → "
          "PPO: " + ", ".join(f"{k} {ms(b, k)} → {ms(a, k)}" for k in keys)]
