"""The PPO memory plan (``python -m hh.plan --config=configs/ppo.py:size=52B ...``).

PPO holds four models at once (Bai et al. 2022, §4.1): the policy and the value model, each trained with
AdamW (fp32 params + two fp32 moments), and the frozen π0 and PM (``frozen_dtype``: their
params may be kept in bf16). Each iteration runs three kinds of program on them: the sampler
(prefill + the decode loop over a KV cache, ``config.sampling.batch_size`` rows per call), the scoring passes (π0's
log-probs and the values on the response positions, the PM at the end of context), and the
update (K epochs × minibatches in one jit, state donated). This module lowers and compiles
each of them from abstract shapes with the stage's real shardings — the same functions the
stage jits (hh/policy/sample.py, hh/ppo/step.py, hh/pm/step.py) — and returns, per device:

* each model's resident bytes (params, optimizer state), from the shardings;
* each program's temporaries, arguments and outputs (XLA's memory analysis), and its peak:
  every resident model + the program's non-resident inputs + temporaries + its outputs that do
  not alias a donated input.

Nothing is allocated; CPU XLA compiles the same programs a TPU would run, so temporaries are an
estimate of the TPU compiler's figure, not that figure.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp

from hh import aot, sharding

GiB = 2**30


def _sds(tree, shardings, dtype=None):
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, dtype or a.dtype, sharding=s),
                      tree, shardings)


def _memory(compiled, extra_args: int, resident: int) -> dict[str, float]:
  m = compiled.memory_analysis()
  return {"temporaries": m.temp_size_in_bytes, "arguments": m.argument_size_in_bytes,
          "outputs": m.output_size_in_bytes, "aliased": m.alias_size_in_bytes,
          "peak": resident + extra_args + m.temp_size_in_bytes + m.output_size_in_bytes
                  - m.alias_size_in_bytes}


def plan_ppo(config, mesh, prompt_len: int, frozen_dtype: str = "float32",
             programs: bool = True) -> dict:
  """Compiles the sampler, the three scoring passes and the PPO update of ``config`` on
  ``mesh`` from abstract shapes; returns bytes per device per model and per program
  (``programs=False``: the models' bytes only, nothing compiled)."""
  import flax.linen as nn

  from hh.models import DecoderLM, ModelConfig, PreferenceModel, ValueModel
  from hh.pm import step as pm_step
  from hh.policy import sample as sample_lib
  from hh.ppo import step as ppo
  from hh.train import build as build_lib
  from hh.train import state as state_lib
  from hh.train.state import TrainState

  cfg, rules = config.ppo, sharding.rules(config)
  mcfg = ModelConfig.from_config(config.model, config.tokenizer.vocab_size)
  policy_model, value_model, pm_model = DecoderLM(mcfg), ValueModel(mcfg), PreferenceModel(mcfg)
  b, n = cfg.rollout_batch, cfg.max_new_tokens
  t_len = prompt_len + n
  ex = (jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32))
  tx = state_lib.make_optimizer(cfg.optim, cfg.loop.steps * cfg.epochs * cfg.minibatches)
  frozen = jnp.dtype(frozen_dtype)
  rep = sharding.replicated(mesh)
  batch_sh = lambda nd: sharding.batch_sharding(mesh, nd)  # noqa: E731
  out = {"n_params": 0, "compile_s": 0.0, "models": {}, "programs": {}}

  with jax.set_mesh(mesh):
    abstract, shardings = {}, {}
    for name, model in (("policy", policy_model), ("value", value_model)):
      abstract[name], shardings[name] = state_lib.abstract_state(
          state_lib.init_fn(model, tx, ex, config.seed), mesh, rules)
    abstract["pi0"], shardings["pi0"] = build_lib.params_by_shape(policy_model, ex, mesh, rules)
    abstract["pm"], shardings["pm"] = build_lib.params_by_shape(
        pm_model, (*ex, jnp.zeros((1,), jnp.int32)), mesh, rules)
    for name in ("policy", "value"):
      a, s = abstract[name], shardings[name]
      out["models"][name] = {"params": sharding.per_device_bytes(a.params, s.params),
                             "opt_state": sharding.per_device_bytes(a.opt_state, s.opt_state)}
    for name in ("pi0", "pm"):
      a = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, frozen), abstract[name])
      out["models"][name] = {"params": sharding.per_device_bytes(a, shardings[name]),
                             "opt_state": 0}
    out["n_params"] = sum(x.size for x in jax.tree.leaves(abstract["policy"].params))
    resident = sum(v["params"] + v["opt_state"] for v in out["models"].values())
    if not programs:
      return out

    policy_params = _sds(abstract["policy"].params, shardings["policy"].params)
    value_params = _sds(abstract["value"].params, shardings["value"].params)
    pi0_params = _sds(abstract["pi0"], shardings["pi0"], frozen)
    pm_params = _sds(abstract["pm"], shardings["pm"], frozen)
    tokens = jax.ShapeDtypeStruct((b, t_len), jnp.int32, sharding=batch_sh(2))
    per_row = lambda dt: jax.ShapeDtypeStruct((b, n), dt, sharding=batch_sh(2))  # noqa: E731

    def compile_(name, fn, args, extra_args):
      t0 = time.perf_counter()
      compiled = aot.compile_accelerator_program(fn, *args)
      out["compile_s"] += time.perf_counter() - t0
      out["programs"][name] = _memory(compiled, extra_args, resident)

    # 1. the sampler on the policy's training params, config.sampling.batch_size rows per call
    sampling = sample_lib.SamplingConfig(max_new_tokens=n, temperature=cfg.temperature,
                                         stop_ids=(1,), cache_block=config.sampling.cache_block)

    def run(params, prompt, mask, row_ids, rng):  # as sample_lib.Sampler runs it
      with nn.logical_axis_rules(sharding.decode_rules(rules)):
        return sample_lib.sample(policy_model, params, prompt, mask, row_ids, rng, sampling)
    rows = min(config.sampling.batch_size, b)  # rows per sampler call, as the stage samples
    prompt = jax.ShapeDtypeStruct((rows, prompt_len), jnp.int32, sharding=batch_sh(2))
    row_ids = jax.ShapeDtypeStruct((rows,), jnp.int32, sharding=batch_sh(1))
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep)
    compile_("sample", jax.jit(run, out_shardings=rep), (policy_params, prompt, prompt, row_ids,
                                                         key), 2 * _bytes(prompt) + _bytes(row_ids))

    # 2. scoring: π0's log-probs and the values on response positions, the PM at the EOC
    ref_lp = build_lib.jit_forward(lambda p, t, m: ppo.response_log_probs(
        policy_model, p, t, m, n, cfg.temperature), mesh, rules)
    values = build_lib.jit_forward(lambda p, t, m: ppo.at_response(value_model, p, t, m, n),
                                   mesh, rules)
    pm_score = build_lib.jit_forward(pm_step.score_fn(pm_model), mesh, rules)
    eoc = jax.ShapeDtypeStruct((b,), jnp.int32, sharding=batch_sh(1))
    compile_("score: pi0 log-probs", ref_lp, (pi0_params, tokens, tokens), 2 * _bytes(tokens))
    compile_("score: values", values, (value_params, tokens, tokens), 2 * _bytes(tokens))
    compile_("score: PM", pm_score, (pm_params, tokens, tokens, eoc),
             2 * _bytes(tokens) + _bytes(eoc))

    # 3. the update, state donated
    update = jax.jit(ppo.make_ppo_update(
        policy_model, value_model, tx, tx, epochs=cfg.epochs, minibatches=cfg.minibatches,
        clip_eps=cfg.clip_eps, vf_clip=cfg.vf_clip, vf_coef=cfg.vf_coef,
        temperature=cfg.temperature, axis_rules=rules), donate_argnums=0)
    scalar = lambda dt: jax.ShapeDtypeStruct((), dt, sharding=rep)  # noqa: E731
    state = ppo.PPOState(
        step=scalar(jnp.int32), kl_coef=scalar(jnp.float32),
        **{name: TrainState(step=scalar(jnp.int32), params=_sds(abstract[name].params,
                                                                 shardings[name].params),
                            opt_state=_sds(abstract[name].opt_state, shardings[name].opt_state),
                            rng=jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=rep))
           for name in ("policy", "value")})
    rollout = {"tokens": tokens, "mask": tokens, "resp_mask": per_row(jnp.float32),
               "logp_old": per_row(jnp.float32), "values_old": per_row(jnp.float32),
               "advantages": per_row(jnp.float32), "returns": per_row(jnp.float32)}
    compile_("update", update, (state, rollout), sum(_bytes(x) for x in rollout.values()))
  return out


def _bytes(x: jax.ShapeDtypeStruct) -> int:
  return sharding.per_device_bytes(x, x.sharding)


def format_ppo_plan(config, mesh, result: dict, prompt_len: int, frozen_dtype: str,
                    memory_gib: float) -> str:
  m, cfg = config.model, config.ppo
  lines = [f"PPO at size {m.size}: 4 models of {result['n_params'] / 1e9:.2f}B params, mesh "
           f"{dict(mesh.shape)}, rollout {cfg.rollout_batch} × ({prompt_len} prompt + "
           f"{cfg.max_new_tokens} sampled) in calls of "
           f"{min(config.sampling.batch_size, cfg.rollout_batch)} rows, {cfg.epochs} epoch(s) × "
           f"{cfg.minibatches} "
           f"minibatches, compute {m.dtype}, trained params {m.param_dtype}, frozen params "
           f"{frozen_dtype}, remat {m.remat_policy} (compiled in {result['compile_s']:.0f}s)",
           "  resident, GiB/device:"]
  for name, v in result["models"].items():
    lines.append(f"    {name:<8} params {v['params'] / GiB:7.2f}   optimizer {v['opt_state'] / GiB:7.2f}")
  lines.append("  programs, GiB/device:       temporaries      peak")
  worst = max(result["programs"].items(), key=lambda kv: kv[1]["peak"])
  for name, v in result["programs"].items():
    lines.append(f"    {name:<24} {v['temporaries'] / GiB:9.2f} {v['peak'] / GiB:9.2f}")
  peak = worst[1]["peak"]
  verdict = "fits" if peak <= memory_gib * GiB else "does NOT fit"
  lines.append(f"  → {verdict} a {memory_gib:g} GiB device ({peak / (memory_gib * GiB):.0%} of "
               f"it at the peak, in {worst[0]})")
  return "\n".join(lines)
