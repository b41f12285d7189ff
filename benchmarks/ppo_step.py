"""One PPO iteration, split into generation / scoring / training: the workload of TRL's
``PPOTrainer`` figure (the PyTorch baseline's W3).

  python benchmarks/ppo_step.py [--value=separate|shared] [--size=810M --dtype=bfloat16]

Policy, reference π0, value and reward model all of one shape (default the 13M: 4 layers, d 512,
8 heads, d_ff 2048, vocab 32,000), random weights, fp32 by default; a separate value model (the work TRL does), or
with ``--value=shared`` a scalar value head on the policy's trunk (``value_init="shared"``: one
trunk's forward and backward in training instead of two — not TRL's workload).
Per iteration: sample 16 prompts × 64 tokens, 64 new tokens each, no early stop, T = 1
(hh/policy/sample.py); score with π0 (log-probs on the response positions only), the value model
and the PM at the last token; per-token rewards with λ_KL = 0.001 and GAE (γ 1, λ 0.95)
(hh/ppo/step.py); then 4 epochs × 2 minibatches of 8 of the jitted update (AdamW on policy and
value). Ends with one JSON line: ``iter_s_median`` (the PyTorch baseline's key), the split
(``gen_s``, ``score_s``, ``train_s``) and the measured matmul peak. A ratio to TRL holds only when measured side by side in the same hour.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from benchmarks import common  # noqa: E402
from configs import common as cfg_common  # noqa: E402
from hh.models import DecoderLM, ModelConfig, PreferenceModel, ValueModel  # noqa: E402
from hh.policy import sample as sample_lib  # noqa: E402
from hh.ppo import step as ppo  # noqa: E402
from hh.train import state as state_lib  # noqa: E402
from hh.train.state import TrainState  # noqa: E402

BATCH, PROMPT, NEW, EPOCHS, MINIBATCHES = 16, 64, 64, 4, 2


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--iters", type=int, default=3)
  ap.add_argument("--vocab", type=int, default=32_000)
  ap.add_argument("--value", choices=("separate", "shared"), default="separate")
  ap.add_argument("--size", default="13M")
  ap.add_argument("--dtype", default="float32", help="compute dtype (params stay float32)")
  ap.add_argument("--remat", default="none")
  args = ap.parse_args()
  shared = args.value == "shared"
  mc = cfg_common.model_config(args.size)
  mc.dtype, mc.remat_policy = args.dtype, args.remat
  cfg = ModelConfig.from_config(mc, args.vocab)
  policy, value, pm = DecoderLM(cfg), ValueModel(cfg), PreferenceModel(cfg)
  tok = jnp.zeros((1, 8), jnp.int32)
  keys = jax.random.split(jax.random.key(0), 4)
  pol_p = nn.unbox(policy.init(keys[0], tok, tok))["params"]
  ref_p = jax.tree.map(jnp.copy, pol_p)
  val_p = nn.unbox(value.init(keys[1], tok, tok))["params"]
  if shared:  # the head alone; the policy's trunk computes the values
    val_p, value = {"head": val_p["head"]}, None
  pm_p = nn.unbox(pm.init(keys[2], tok, tok, jnp.zeros((1,), jnp.int32)))["params"]
  optim = cfg_common.optim(1e-5, warmup_steps=0, schedule="constant")
  tx = state_lib.make_optimizer(optim, 1000)
  mk = lambda p: TrainState(step=jnp.zeros((), jnp.int32), params=p,  # noqa: E731
                            opt_state=tx.init(p), rng=jax.random.PRNGKey(0))
  state = ppo.PPOState(step=jnp.zeros((), jnp.int32), policy=mk(pol_p), value=mk(val_p),
                       kl_coef=jnp.float32(0.001))
  sampling = sample_lib.SamplingConfig(max_new_tokens=NEW, temperature=1.0, stop_ids=())
  rng = np.random.default_rng(0)
  prompts = jnp.asarray(rng.integers(5, args.vocab, (BATCH, PROMPT)), jnp.int32)
  pmask = jnp.ones_like(prompts)

  generate = jax.jit(lambda p, k: sample_lib.sample(policy, p, prompts, pmask,
                                                   jnp.arange(BATCH), k, sampling))

  @jax.jit
  def score(state, ref_p, pm_p, out):
    tokens = jnp.concatenate([prompts, out["tokens"]], 1)
    mask = jnp.concatenate([pmask, out["mask"]], 1)
    resp = out["mask"].astype(jnp.float32)
    ref_lp = ppo.response_log_probs(policy, ref_p, tokens, mask, NEW)
    values = ppo.response_values(policy, value, (state.policy.params, state.value.params), tokens,
                                 mask, NEW)
    eoc = mask.sum(-1) - 1  # the PM read at the last token (the stage appends its EOC)
    r_pm = pm.apply({"params": pm_p}, tokens, mask, eoc)
    rewards, _ = ppo.token_rewards(out["logp"], ref_lp, resp, r_pm, state.kl_coef)
    adv, ret = ppo.gae(rewards, values, resp)
    return {"tokens": tokens, "mask": mask, "resp_mask": resp, "logp_old": out["logp"],
            "values_old": values, "advantages": adv, "returns": ret}

  update = jax.jit(ppo.make_ppo_update(policy, value, tx, tx, epochs=EPOCHS,
                                       minibatches=MINIBATCHES), donate_argnums=0)
  rows = []
  for it in range(args.iters + 1):  # the first iteration compiles
    t0 = time.perf_counter()
    out = jax.block_until_ready(generate(state.policy.params, jax.random.PRNGKey(it)))
    t1 = time.perf_counter()
    rollout = jax.block_until_ready(score(state, ref_p, pm_p, out))
    t2 = time.perf_counter()
    state, m = update(state, rollout)
    jax.block_until_ready(m)
    t3 = time.perf_counter()
    if it:
      rows.append((t3 - t0, t1 - t0, t2 - t1, t3 - t2))
  peak = common.matmul_peak(jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32)
  med = np.median(np.array(rows), axis=0)
  # training FLOPs: policy and value, fwd+bwd over 128 tokens × 16 rows × 4 epochs (the LM head
  # on the 64 response positions only); the floor the issue names is ~1.9 TFLOP an iteration
  n_layer, d, f, v = mc.n_layer, mc.d_model, mc.d_ff, args.vocab
  seq = PROMPT + NEW
  trunk = common.lm_train_flops(n_layer, d, f, 0, BATCH * seq, seq)
  head = 6 * d * v * BATCH * NEW
  train_flops = EPOCHS * ((1 if shared else 2) * trunk + head)
  print(f"device: {jax.devices()[0].device_kind} × {jax.device_count()}; {args.size} shape, "
        f"{BATCH} prompts × {PROMPT}, {NEW} new, {EPOCHS} epochs × {MINIBATCHES} minibatches, "
        f"{args.dtype}, {args.value} value")
  print(f"iteration {med[0]:.2f} s  |  generation {med[1]:.2f}  |  scoring {med[2]:.2f}  |  "
        f"training {med[3]:.2f}")
  print(f"training: {train_flops / 1e12:.2f} TFLOP → {train_flops / med[3] / 1e9:.1f} GFLOP/s = "
        f"{train_flops / med[3] / peak:.1%} of the measured {args.dtype} peak "
        f"{peak / 1e9:.1f} GFLOP/s")
  common.emit("hh_ppo_step" + ("_shared" if shared else ""), iter_s_median=med[0], gen_s=med[1],
              score_s=med[2], train_s=med[3],
              train_mfu=train_flops / med[3] / peak, peak_matmul_gflops=peak / 1e9)


if __name__ == "__main__":
  main()
