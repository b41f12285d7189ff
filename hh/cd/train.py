"""The context-distillation stage (Bai et al. 2022, App. A.1): π0 = the LM finetuned to act as if the HHH prompt
were in its context.

Teacher: the pretrained LM, frozen, reading ``prompt + window``; student: the same LM (its
params start there) reading the window alone, on the LM corpus's windows. Per position, the loss
is KL(teacher ‖ student) over the teacher's top-k tokens plus one bucket (hh/cd/step.py);
the teacher's top-k are computed by a separate jitted forward for each batch and handed to the
one jitted update, as the paper stores them. LR 0.05× pretraining, linear decay to 0
(configs/cd.py).

Outputs in ``workdir``: checkpoints and ``metrics.jsonl`` (train and validation KL against the
step: Fig. 30), ``tokenizer.model`` (the LM's), ``cd_result.json``. The workdir is an LM
workdir: ``hh/policy/policy.py`` loads it as π0.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from hh import io, sharding
from hh import tokenizer as tok_lib
from hh.cd import step as distill
from hh.lm import train as lm_train
from hh.models import DecoderLM, ModelConfig, head
from hh.policy import policy as policy_lib
from hh.train import build as build_lib
from hh.train import checkpoint, loop
from hh.train import metrics as metrics_lib
from hh.train import state as state_lib


def build(config, mesh, vocab_size: int) -> build_lib.Built:
  """The student's model, optimizer and jitted CD update."""
  cfg = config.cd
  model = DecoderLM(ModelConfig.from_config(config.model, vocab_size))
  tx = state_lib.make_optimizer(cfg.optim, cfg.loop.steps)
  example = (jnp.zeros((1, cfg.data.seq_len), jnp.int32),) * 2
  return build_lib.build(model, tx, example, distill.cd_loss(model), distill.CD_BATCH_NDIMS,
                         mesh=mesh, rules=sharding.rules(config), seed=config.seed,
                         max_replicated_fraction=config.max_replicated_fraction)


def teacher_fn(model: DecoderLM, prefix: np.ndarray, k: int):
  """``(params, inputs [B, T]) -> (t_lp, t_idx, t_rest)``: the frozen LM reading ``prefix``
  [P] then the window; its top-k at the window's positions."""
  p_len = len(prefix)

  def fn(params, inputs):
    b = inputs.shape[0]
    tokens = jnp.concatenate([jnp.broadcast_to(jnp.asarray(prefix), (b, p_len)), inputs], 1)
    x, w = model.apply({"params": params}, tokens, jnp.ones_like(tokens), method="head_inputs")
    return head.per_position(lambda logits: distill.teacher_topk(logits, k), x[:, p_len:], w)
  return fn


def train_and_evaluate(config, workdir: str, world_dir: str | None = None,
                       lm_dir: str | None = None) -> dict:
  """Distils the prompt into the LM of ``lm_dir`` (``config.cd.init_from`` or a pipeline's LM
  stage, resolved by hh/stages.py)."""
  from hh import sources
  if lm_dir is None:
    raise ValueError("config.cd.init_from: the pretrained LM's workdir is needed (the teacher and "
                     "the student's start)")
  io.makedirs(workdir)
  cfg = config.cd
  if tok_lib.find(workdir) is None:
    policy_lib.load_tokenizer(lm_dir).save(workdir)
  places = sources.Places.from_config(config, workdir, world_dir)
  data = lm_train.load_data(config, workdir, places, cfg.data)
  tok = data.tokenizer
  prefix = np.asarray(tok.encode(sources.prompt_text(config.cd.prompt, places)), np.int32)
  mesh = sharding.make_mesh(config.mesh)
  it, val = lm_train.windows(data, cfg.data, config.seed)
  settings = loop.Settings.from_config(cfg.loop, progress=config.progress)
  writer = metrics_lib.Writer(workdir)
  with jax.set_mesh(mesh):
    built = build(config, mesh, tok.vocab_size)
    teacher_params = checkpoint.load_params(lm_dir, built.abstract.params, built.shardings.params)
    bs = built.batch_shardings
    teacher = build_lib.jit_forward(teacher_fn(built.model, prefix, cfg.top_k), mesh,
                                    built.rules,
                                    out_shardings=(bs["t_lp"], bs["t_idx"], bs["t_rest"]))
    loss_fn = distill.cd_loss(built.model)
    eval_step = build_lib.jit_forward(lambda p, b: loss_fn(p, b, None)[1], mesh, built.rules)

    def with_teacher(batch: dict) -> dict:
      b = {"inputs": batch["inputs"], "weights": batch["weights"]}
      arrays = sharding.global_batch(b, mesh)
      t_lp, t_idx, t_rest = teacher(teacher_params, arrays["inputs"])
      return {**arrays, "t_lp": t_lp, "t_idx": t_idx, "t_rest": t_rest}

    val_batches = [with_teacher(b) for b in val]

    def evaluate(state):
      total = None
      for b in val_batches:
        total = metrics_lib.accumulate(total, eval_step(state.params, b))
      return metrics_lib.reduce(total)

    mngr = checkpoint.manager(workdir, cfg.loop.keep_ckpts, cfg.loop.ckpt_every)
    copy = jax.jit(lambda p: jax.tree.map(jnp.copy, p), out_shardings=built.shardings.params)
    state = build_lib.initial_state(  # the student starts as a copy: the update donates it
        built, mngr, it, lambda s: build_lib.with_params(built, s, copy(teacher_params)))
    start_path = os.path.join(workdir, "cd_start.json")  # the KL before any step, kept on resume
    if int(jax.device_get(state.step)) == 0:
      kl0 = evaluate(state)["loss"]  # every process: a collective
      if jax.process_index() == 0:
        io.write_json(start_path, {"val_kl_start": kl0})
    writer.truncate_after(int(jax.device_get(state.step)))
    state = loop.fit(
        state=state, train_step=built.train_step,
        batches=lambda _: with_teacher(sharding.process_rows(next(it))),
        data_state=it.state, evaluate=evaluate, settings=settings, mngr=mngr, writer=writer,
        tokens_per_step=cfg.data.batch_size * cfg.data.seq_len,
        lr_fn=state_lib.lr_schedule(cfg.optim, settings.steps))
    final = evaluate(state)
    mngr.close()
  writer.close()
  result = {"step": int(jax.device_get(state.step)), "val_kl": final["loss"],
            "prompt_tokens": int(len(prefix)), "tokenizer": os.path.join(workdir,
                                                                        "tokenizer.model"),
            "teacher": lm_dir}
  path = os.path.join(workdir, "cd_result.json")
  if io.exists(start_path):
    result["val_kl_start"] = io.read_json(start_path)["val_kl_start"]
  if jax.process_index() == 0:
    io.write_json(path, result)
  return result


def summary(result: dict) -> list[str]:
  start = result.get("val_kl_start")
  return [f"cd: {result['step']} steps; validation KL(teacher‖student) "
          f"{start if start is None else f'{start:.3f}'} → {result['val_kl']:.3f} nats/token "
          f"(prompt of {result['prompt_tokens']} tokens)"]

