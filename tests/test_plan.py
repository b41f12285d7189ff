"""AOT compile of a mid-size train step on a simulated mesh, from abstract shapes."""
from configs import lm
from hh import plan, sharding


def _plan_on_8(config):
  """``config``'s step planned on 8 simulated devices as fsdp 4 × tensor 2 → (mesh, bytes)."""
  config.mesh.fsdp, config.mesh.tensor = 4, 2
  mesh = sharding.make_mesh(config.mesh)
  return mesh, plan.plan(config, mesh)


def test_a_pm_config_plans_its_finetuning_step():
  """A PM config plans the PM's step (two sequences per pair, the scalar head), not the LM's."""
  from configs import pm
  config = pm.get_config("size=small")
  config.pm.finetune.batch_pairs, config.pm.finetune.seq_len = 8, 64
  mesh, result = _plan_on_8(config)
  n = result["n_params"]
  assert abs(result["params"] - 4 * n / 8) / (4 * n / 8) < 0.02
  # tokens and mask of 16 sequences × 64, their EOC positions and the 8 pair weights, split over
  # the batch axes (data × fsdp = 4)
  assert result["batch"] == (2 * 16 * 64 * 4 + 16 * 4 + 8 * 4) / 4
  text = plan.format_plan(config, mesh, result, 32.0)
  assert "pm step, batch 8 pairs × 64" in text


def test_aot_compile_197m_on_fsdp_tensor_mesh():
  config = lm.get_config("size=197M")
  config.lm.data.batch_size, config.lm.data.seq_len = 8, 256
  mesh, result = _plan_on_8(config)
  n = result["n_params"]
  # fp32 params split 8 ways (norms replicated: a few KiB), AdamW's two moments twice that
  assert abs(result["params"] - 4 * n / 8) / (4 * n / 8) < 0.01
  assert abs(result["opt_state"] - 8 * n / 8) / (8 * n / 8) < 0.01
  assert result["temporaries"] > 0
  assert result["peak"] >= result["params"] + result["opt_state"]
  assert "fits a 32 GiB device" in plan.format_plan(config, mesh, result, 32.0)


def test_ppo_plan_counts_four_models_and_frozen_bf16_halves_two():
  import jax

  from configs import ppo as ppo_config
  from hh.ppo import plan as rl_plan
  config = ppo_config.get_config("size=tiny")
  config.ppo.update(dict(rollout_batch=16, minibatches=2, max_new_tokens=8))
  config.sampling.batch_size = 8
  mesh = sharding.make_mesh(config.mesh)
  assert mesh.shape["fsdp"] == jax.device_count() == 8
  f32 = rl_plan.plan_ppo(config, mesh, prompt_len=16)
  bf16 = rl_plan.plan_ppo(config, mesh, prompt_len=16, frozen_dtype="bfloat16", programs=False)
  n, models = f32["n_params"], f32["models"]
  assert abs(models["policy"]["params"] - 4 * n / 8) / (4 * n / 8) < 0.02
  for name in ("policy", "value"):  # AdamW: two fp32 moments per parameter
    assert abs(models[name]["opt_state"] - 2 * models[name]["params"]) < 0.01 * \
        models[name]["params"] + 64
  assert models["pi0"] == {"params": models["policy"]["params"], "opt_state": 0}
  for name in ("pi0", "pm"):
    assert bf16["models"][name]["params"] == models[name]["params"] // 2
  resident = sum(v["params"] + v["opt_state"] for v in models.values())
  assert set(f32["programs"]) == {"sample", "score: pi0 log-probs", "score: values",
                                  "score: PM", "update"}
  for p in f32["programs"].values():
    assert p["temporaries"] > 0 and p["peak"] >= resident
  text = rl_plan.format_ppo_plan(config, mesh, f32, 16, "float32", 32.0)
  assert "fits a 32 GiB device" in text and "in calls of 8 rows" in text


def test_the_sampler_never_gathers_a_weight_under_the_decode_rules():
  """Under the training (FSDP) rules XLA all-gathers whole weights for the decode loop (the
  52B sampler's 388 GiB per device); under ``sharding.decode_rules`` no all-gather in the
  compiled sampler has a weight's shape."""
  import re

  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from configs import ppo as ppo_config
  from hh.models import DecoderLM, ModelConfig
  from hh.policy import sample as sample_lib
  from hh.train import build as build_lib
  config = ppo_config.get_config("size=tiny")
  mesh = sharding.make_mesh(config.mesh)
  rules = sharding.rules(config)
  model = DecoderLM(ModelConfig.from_config(config.model, 512))
  ex = (jnp.zeros((1, 8), jnp.int32), jnp.ones((1, 8), jnp.int32))
  cfg = sample_lib.SamplingConfig(max_new_tokens=4, stop_ids=())
  gathered = {}
  with jax.set_mesh(mesh):
    abstract, shardings = build_lib.params_by_shape(model, ex, mesh, rules)
    params = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
    weights = {"f32[" + ",".join(map(str, x.shape[1:])) + "]"
               for x in jax.tree.leaves(abstract["trunk"]["layers"]) if x.ndim >= 3}
    prompt = jax.ShapeDtypeStruct((8, 16), jnp.int32, sharding=sharding.batch_sharding(mesh))
    ids = jax.ShapeDtypeStruct((8,), jnp.int32, sharding=sharding.batch_sharding(mesh, 1))
    key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=sharding.replicated(mesh))
    for name, r in (("train", rules), ("decode", sharding.decode_rules(rules))):
      def run(p, x, m, i, k, r=r):
        with nn.logical_axis_rules(r):
          return sample_lib.sample(model, p, x, m, i, k, cfg)
      hlo = jax.jit(run).lower(params, prompt, prompt, ids, key).compile().as_text()
      gathered[name] = set(re.findall(r"= (f32\[[0-9,]+\])\S* all-gather", hlo)) & weights
  assert gathered["train"], "the check would not see a gathered weight"
  assert not gathered["decode"], gathered["decode"]


def _largest_f32(hlo: str) -> int:
  """Elements of the largest float32 array anywhere in a compiled program's text."""
  import math
  import re
  return max(math.prod(int(n) for n in dims.split(",") if n)
             for dims in re.findall(r"f32\[([0-9,]*)\]", hlo))


def test_the_bf16_steps_store_neither_whole_scores_nor_whole_logits():
  """The accelerator's LM and PM steps as planned (bf16, no remat, 4 × 2,048 tokens on one
  device): no float32 array as large as one layer's attention scores [B, H, T, T] or as the
  LM's logits [B, T, V] (the head runs in 4,096-row chunks). XLA's fused attention form does
  store the scores of every layer, and the plan's temporaries show them."""
  import jax

  from configs import pm
  b, t, vocab = 4, 2048, 6144   # sizes that differ: scores 67M elements, logits 50M, d_ff 1,024
  results = {}
  for stage, attention in (("lm", "auto"), ("lm", "xla"), ("pm", "auto")):
    config = (lm.get_config("size=small") if stage == "lm"
              else pm.get_config("size=small"))
    config.model.update(dtype="bfloat16", remat_policy="none", attention=attention)
    config.tokenizer.vocab_size = vocab
    if stage == "lm":
      config.lm.data.batch_size, config.lm.data.seq_len = b, t
    else:
      config.pm.finetune.batch_pairs, config.pm.finetune.seq_len = b // 2, t
    config.mesh.update(data=1, fsdp=1, tensor=1)
    mesh = sharding.make_mesh(config.mesh, jax.devices()[:1])
    results[stage, attention] = plan.plan(config, mesh, with_hlo=True)
  n_layer, n_head = 4, 4                                       # size=small
  scores = b * n_head * t * t
  for key in (("lm", "auto"), ("pm", "auto")):
    assert _largest_f32(results[key]["hlo"]) < min(scores, b * t * vocab), key
  assert _largest_f32(results["lm", "xla"]["hlo"]) >= scores   # the check sees stored scores
  stored = results["lm", "xla"]["temporaries"] - results["lm", "auto"]["temporaries"]
  assert stored >= n_layer * scores * 4
