"""Hugging Face checkpoints in and out: GPT-NeoX (Pythia) and Llama ↔ hh's DecoderLM.

  python -m hh.convert import --src=HF_DIR --dst=DIR [--config=configs/lm.py:size=...]
  python -m hh.convert export --src=DIR --dst=HF_DIR [--arch=gpt_neox|llama]

and in Python ``model, params = hh.convert.load(path)`` for either kind of directory.

``import`` reads a model directory (``config.json``, ``model.safetensors`` or a sharded
``model.safetensors.index.json``, ``tokenizer.json`` or ``tokenizer.model``) and writes an LM
workdir that every stage's ``init_from`` takes: ``config.json`` (hh's config, its ``model``
block read from the Hugging Face one), the tokenizer with hh's reserved pieces added
(``hh.tokenizer.with_reserved``) and an orbax checkpoint of the params. The tensors stream one at
a time into the mesh's shardings (``hh/models/hf.py``): a process reads only the slices its own
devices hold, through safetensors' memory-mapped files, so no host ever holds the whole model.
``export`` writes a directory that ``transformers`` loads, one safetensors file per layer, so its
host memory beyond the restored params is one layer. Layouts: ``hh/models/hf.py``.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from hh import io
from hh.models import DecoderLM, ModelConfig, hf


def model_for(path: str, dtype: str | None = None) -> ModelConfig:
  """The ModelConfig of a Hugging Face directory or an hh LM workdir (``dtype``: the compute
  dtype; default: the directory's, float32 for a Hugging Face one)."""
  from ml_collections import ConfigDict

  from hh import tokenizer as tok_lib
  if hf.is_hf_dir(path):
    tok = tok_lib.for_dir(path)
    return hf.model_config(path, tok.vocab_size, dtype=jnp.dtype(dtype or "float32"))
  raw = hf.read_hf_config(path)
  if "model" not in raw:
    raise ValueError(f"{os.path.join(path, 'config.json')}: neither a Hugging Face config "
                     "(model_type) nor an hh one (model)")
  block = dict(raw["model"], **({"dtype": dtype} if dtype else {}))
  tok = tok_lib.for_dir(path, (raw.get("tokenizer") or {}).get("path"))
  return ModelConfig.from_config(ConfigDict(block), tok.vocab_size)


def load(path: str, dtype: str | None = "float32", mesh=None) -> tuple[DecoderLM, dict]:
  """``(model, params)`` of a Hugging Face model directory or an hh LM workdir (an imported
  checkpoint or a trained stage's), params restored into the shards of ``mesh`` (default: all
  devices on the fsdp axis). ``model.apply({"params": params}, tokens)`` → logits [B, T, V]
  float32, computed in ``dtype`` (None: the directory's own)."""
  from configs import common
  from hh import sharding
  from hh.train import build as build_lib
  from hh.train import checkpoint
  model = DecoderLM(model_for(path, dtype))
  base = common.base("tiny")
  mesh = mesh or sharding.make_mesh(base.mesh)
  example = (jnp.zeros((1, 8), jnp.int32),) * 2
  with jax.set_mesh(mesh):
    abstract, shardings = build_lib.params_by_shape(model, example, mesh, base.axis_rules)
    return model, checkpoint.load_params(path, abstract, shardings)


def _fresh(dst: str) -> str:
  """A temporary sibling of ``dst`` to write into (renamed to ``dst`` when complete). The
  directories are local (safetensors maps its files): copy one to object storage afterwards."""
  if not io.is_local(dst):
    raise ValueError(f"--dst={dst}: hh.convert writes a local directory; allowed: a local path "
                     "(copy it to the bucket afterwards, e.g. gcloud storage cp -r)")
  if io.exists(dst) and io.listdir(dst):
    raise FileExistsError(f"--dst={dst} exists and is not empty; allowed: a new directory")
  tmp = f"{io.abspath(dst).rstrip('/')}.tmp{os.getpid()}"
  io.rmtree(tmp)
  io.makedirs(tmp)
  return tmp


def _publish(tmp: str, dst: str):
  if io.isdir(dst):
    os.rmdir(dst)  # empty (checked by _fresh)
  io.rename(tmp, dst)


def import_hf(src: str, dst: str, config) -> dict:
  """Writes the LM workdir ``dst`` from Hugging Face directory ``src`` (the module docstring);
  ``config``: the config whose mesh, rules and dtypes the checkpoint is made for (its model
  block's architecture and shape are replaced by ``src``'s). Nothing is left behind on error."""
  from hh import io, sharding
  from hh import tokenizer as tok_lib
  from hh.train import build as build_lib
  from hh.train import checkpoint
  block = hf.model_block(hf.read_hf_config(src), os.path.join(src, "config.json"))
  if tok_lib.find(src) is None:
    raise FileNotFoundError(f"{src}: no tokenizer.json or tokenizer.model")
  tmp = _fresh(dst)
  try:
    tok = tok_lib.with_reserved(tok_lib.find(src))
    tok.save(tmp)
    config = config.copy_and_resolve_references()
    config.model.update(block)
    config.model.vocab_size = max(block["vocab_size"], tok.vocab_size)
    config.tokenizer.path = None
    model = DecoderLM(ModelConfig.from_config(config.model, tok.vocab_size))
    mesh = sharding.make_mesh(config.mesh)
    example = (jnp.zeros((1, 8), jnp.int32),) * 2
    with jax.set_mesh(mesh):
      abstract, shardings = build_lib.params_by_shape(model, example, mesh,
                                                      sharding.rules(config))
      params = hf.params(src, model.cfg, abstract, shardings)
      mngr = checkpoint.manager(tmp, 1, 1)
      checkpoint.save(mngr, 0, {"params": params}, {}, force=True)
      mngr.wait_until_finished()
      mngr.close()
    if jax.process_index() == 0:
      io.write_json(os.path.join(tmp, "imported.json"),
                    {"from": io.abspath(src), "model_type": hf.read_hf_config(src)[
                        "model_type"], "vocab_size": config.model.vocab_size,
                     "tokenizer_pieces": tok.vocab_size})
      io.write_text(os.path.join(tmp, "config.json"), config.to_json_best_effort(indent=1))
      _publish(tmp, dst)
  except BaseException:
    io.rmtree(tmp)
    raise
  return {"dst": dst, "n_layer": block["n_layer"], "vocab_size": config.model.vocab_size}


def export_hf(src: str, dst: str, arch: str | None = None) -> str:
  """Writes ``src`` (an hh LM workdir) as a Hugging Face directory ``dst``: config.json, one
  safetensors file per layer plus one for the embedding, norm and head, their index, and the
  tokenizer. Returns the architecture."""
  import safetensors.numpy

  from hh import io
  from hh import tokenizer as tok_lib
  model, params = load(src)
  cfg = model.cfg
  arch = arch or hf.arch_of(cfg)
  tmp = _fresh(dst)
  try:
    host = lambda a: np.ascontiguousarray(np.asarray(jax.device_get(a), np.float32))  # noqa: E731
    weight_map, n = {}, cfg.n_layer + 1
    for i in range(n):
      if i < cfg.n_layer:
        layer = jax.tree.map(lambda a, i=i: host(a[i]), params["trunk"]["layers"])
        tensors = hf.hf_layer(layer, cfg, arch, i)
      else:
        rest = {"trunk": {k: v for k, v in params["trunk"].items() if k != "layers"},
                **{k: v for k, v in params.items() if k != "trunk"}}
        tensors = hf.hf_globals(jax.tree.map(host, rest), cfg, arch)
      name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
      safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                                  os.path.join(tmp, name), metadata={"format": "pt"})
      weight_map.update({k: name for k in tensors})
    io.write_json(os.path.join(tmp, "model.safetensors.index.json"),
                  {"metadata": {}, "weight_map": weight_map})
    io.write_json(os.path.join(tmp, "config.json"), hf.hf_config(cfg, arch))
    raw = hf.read_hf_config(src)
    tok_lib.for_dir(src, (raw.get("tokenizer") or {}).get("path")).save(tmp)
    _publish(tmp, dst)
  except BaseException:
    io.rmtree(tmp)
    raise
  return arch


_SRC = flags.DEFINE_string("src", None, "import: a Hugging Face model directory; export: an hh "
                           "LM workdir (imported, or a trained lm/cd/ppo stage's)")
_DST = flags.DEFINE_string("dst", None, "the directory to write (new or empty)")
_ARCH = flags.DEFINE_enum("arch", None, ["gpt_neox", "llama"], "export: the architecture "
                          "(default: the one the model's options express)")


def main(argv):
  from hh import cli
  if len(argv) != 2 or argv[1] not in ("import", "export"):
    raise app.UsageError("usage: python -m hh.convert import|export --src=DIR --dst=DIR")
  if not _SRC.value or not _DST.value:
    raise app.UsageError("--src and --dst are required")
  with cli.user_errors("hh.convert"):
    if argv[1] == "import":
      out = import_hf(_SRC.value, _DST.value, _CONFIG.value)
    else:
      out = {"dst": _DST.value, "arch": export_hf(_SRC.value, _DST.value, _ARCH.value)}
  print(json.dumps(out))


if __name__ == "__main__":
  from ml_collections import config_flags

  from hh import cli
  _CONFIG = config_flags.DEFINE_config_file(
      "config", os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "configs", "lm.py"),
      "import: the config whose mesh, rules and dtypes the checkpoint is made for")
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, "hh.convert"))
