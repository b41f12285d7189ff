"""Scale without the hardware: AOT-compile a train step for a size on a mesh, print bytes/device.

  python -m hh.plan --config=configs/lm.py:size=52B --devices=64 \\
      --config.mesh.fsdp=16 --config.mesh.tensor=4 --device_memory_gib=32

On CPU with ``--devices`` simulated devices and abstract shapes only (nothing is allocated), it
lowers and compiles the jitted LM train step (a PM config: the PM's finetuning step; a PPO
config: hh/ppo/plan.py's programs) with its real shardings and prints, per device, the
bytes of parameters, optimizer state and batch (from the shardings) and the compiled step's
temporaries (XLA's memory analysis). CPU XLA is not TPU XLA, so the temporaries are an estimate
of the same program, not the TPU compiler's exact figure.
"""
from __future__ import annotations

import time

import jax
import jax.numpy as jnp
from absl import app, flags
from ml_collections import config_flags

from hh import aot, cli

GiB = 2**30


def _step_and_batch(config, mesh):
  """The train step ``config.stage`` runs (the LM's, or a PM phase's: finetuning) built on
  ``mesh``, and its batch as abstract arrays → (built, batch, what a row is)."""
  from hh import sharding
  vocab = config.tokenizer.vocab_size
  if config.get("stage") == "pm":
    from hh.pm import train as pm_train
    phase = config.pm.finetune
    built = pm_train.build(config, phase, mesh, vocab, phase.loop.get("steps") or 1000)
    rows, t = 2 * phase.batch_pairs, phase.seq_len
    shapes = {"tokens": ((rows, t), jnp.int32), "mask": ((rows, t), jnp.int32),
              "eoc": ((rows,), jnp.int32), "weight": ((phase.batch_pairs,), jnp.float32)}
    what = f"{phase.batch_pairs} pairs × {t}"
  else:
    from hh.lm import train as lm_train
    built = lm_train.build(config, mesh, vocab)
    shape = (config.lm.data.batch_size, config.lm.data.seq_len)
    shapes = {k: (shape, jnp.float32 if k == "weights" else jnp.int32)
              for k in ("inputs", "targets", "weights")}
    what = f"{shape[0]}×{shape[1]}"
  batch = {k: jax.ShapeDtypeStruct(shp, dt, sharding=sharding.batch_sharding(mesh, len(shp)))
           for k, (shp, dt) in shapes.items()}
  return built, batch, what


def plan(config, mesh, with_hlo: bool = False) -> dict[str, float]:
  """Compiles the train step of ``config`` (an LM or PM config) on ``mesh`` from abstract shapes;
  returns bytes per device (and, ``with_hlo``, the compiled program's text under "hlo")."""
  from hh import sharding

  with jax.set_mesh(mesh):
    built, batch, what = _step_and_batch(config, mesh)
    abstract, shardings = built.abstract, built.shardings
    state = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                         abstract, shardings)
    t0 = time.perf_counter()
    compiled = aot.compile_accelerator_program(built.train_step, state, batch)
    compile_s = time.perf_counter() - t0
  mem = compiled.memory_analysis()
  n_params = sum(x.size for x in jax.tree.leaves(abstract.params))
  out = {
      "params": sharding.per_device_bytes(abstract.params, shardings.params),
      "opt_state": sharding.per_device_bytes(abstract.opt_state, shardings.opt_state),
      "batch": sum(sharding.per_device_bytes(b, b.sharding) for b in batch.values()),
      "arguments": mem.argument_size_in_bytes,
      "outputs": mem.output_size_in_bytes,
      "aliased": mem.alias_size_in_bytes,
      "temporaries": mem.temp_size_in_bytes,
      "n_params": n_params,
      "compile_s": compile_s,
      "batch_shape": what,
  }
  # Donated state is aliased to the output, so the peak is arguments + temporaries + the outputs
  # that are not aliased (the metrics).
  out["peak"] = out["arguments"] + out["temporaries"] + out["outputs"] - out["aliased"]
  if with_hlo:
    out["hlo"] = compiled.as_text()
  return out


def format_plan(config, mesh, result: dict, memory_gib: float) -> str:
  m = config.model
  lines = [f"size {m.size}: {result['n_params'] / 1e9:.2f}B params, mesh {dict(mesh.shape)}, "
           f"{config.get('stage', 'lm')} step, batch {result['batch_shape']}, compute {m.dtype}, params "
           f"{m.param_dtype}, remat {m.remat_policy} (compiled in {result['compile_s']:.0f}s)"]
  for key in ("params", "opt_state", "batch", "temporaries", "peak"):
    lines.append(f"  {key:<12} {result[key] / GiB:8.2f} GiB/device")
  verdict = "fits" if result["peak"] <= memory_gib * GiB else "does NOT fit"
  lines.append(f"  → {verdict} a {memory_gib:g} GiB device "
               f"({result['peak'] / (memory_gib * GiB):.0%} of it)")
  return "\n".join(lines)


def main(argv):
  del argv
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_num_cpu_devices", flags.FLAGS.devices)
  from hh import sharding
  f = flags.FLAGS
  with cli.user_errors("hh.plan"):
    config = f.config
    if config.get("stage") == "ppo":
      from hh.ppo import plan as rl_plan
      for fsdp in f.fsdp_search or [None]:
        devices = None
        if fsdp is not None:
          config.mesh.fsdp = int(fsdp)
          devices = jax.devices()[:config.mesh.fsdp * config.mesh.data * config.mesh.tensor]
        mesh = sharding.make_mesh(config.mesh, devices)
        result = rl_plan.plan_ppo(config, mesh, f.prompt_len, f.frozen_dtype)
        print(rl_plan.format_ppo_plan(config, mesh, result, f.prompt_len, f.frozen_dtype,
                                      f.device_memory_gib), flush=True)
      return
    mesh = sharding.make_mesh(config.mesh)
    print(format_plan(config, mesh, plan(config, mesh), f.device_memory_gib))


def define_flags():
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/lm.py:size=52B",
                                  lock_config=False)
  flags.DEFINE_integer("devices", 8, "Number of simulated CPU devices.")
  flags.DEFINE_float("device_memory_gib", 32.0, "Memory of one target device, GiB.")
  flags.DEFINE_integer("prompt_len", 512, "PPO plans: the prompt bucket of a rollout.")
  flags.DEFINE_enum("frozen_dtype", "float32", ["float32", "bfloat16"],
                    "PPO plans: how π0's and the PM's frozen params are stored.")
  flags.DEFINE_list("fsdp_search", [], "PPO plans: compile on each of these fsdp sizes in turn "
                    "(devices = fsdp × data × tensor, at most --devices).")
  flags.mark_flags_as_required(["config"])


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, "hh.plan"))
