"""Hugging Face model directories as hh reads them: ``config.json`` → hh's model options,
safetensors tensors → hh's parameter layout (both directions), streamed into shardings.

Used by ``hh.convert`` (import, export, ``load``) and by every stage whose ``init_from`` is a
Hugging Face directory (``hh/train/checkpoint.py``). The layouts (one layer, H heads, Hkv
key/value heads, K head size, D model, F MLP width):

  hh                         GPT-NeoX                                Llama
  attn/query [D, H, K]       attention.query_key_value [H·3·K, D]    self_attn.q_proj [H·K, D]
  attn/key   [D, Hkv, K]       (per head: query, key, value)         self_attn.k_proj [Hkv·K, D]
  attn/value [D, Hkv, K]                                             self_attn.v_proj [Hkv·K, D]
  attn/out   [H, K, D]       attention.dense [D, H·K]                self_attn.o_proj [D, H·K]
  mlp/wi     [D, F]          mlp.dense_h_to_4h [F, D]                mlp.up_proj [F, D]
  mlp/wg     [D, F]          –                                       mlp.gate_proj [F, D]
  mlp/wo     [F, D]          mlp.dense_4h_to_h [D, F]                mlp.down_proj [D, F]
  ln_attn, ln_mlp            input_layernorm, post_attention_layernorm (both)

Rows of the embedding and head past the checkpoint's vocabulary (hh's tokenizer pieces, when the
checkpoint has no spare rows; Pythia's padded vocabulary has) are the mean of its rows.
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax
import numpy as np

from hh import io
from hh.models.transformer import ModelConfig

# Tensors that checkpoints carry but that are buffers, not parameters (recomputed by the model).
_BUFFERS = ("attention.bias", "attention.masked_bias", "rotary_emb.inv_freq")
_GELU = {"gelu": False, "gelu_new": True, "gelu_pytorch_tanh": True, "gelu_fast": True}

# --- config.json ↔ hh's config.model ----------------------------------------------------------

def read_hf_config(path: str) -> dict:
  file = os.path.join(path, "config.json")
  if not io.isfile(file):
    raise FileNotFoundError(f"{path}: no config.json (a Hugging Face model directory or an hh "
                            "checkpoint directory was expected)")
  return io.read_json(file)


def is_hf_dir(path: str) -> bool:
  """A Hugging Face model directory: a config.json with ``model_type``."""
  try:
    return "model_type" in read_hf_config(path)
  except (FileNotFoundError, json.JSONDecodeError):
    return False


def model_block(hf: dict, file: str = "config.json") -> dict:
  """hh's ``config.model`` keys for a Hugging Face config (GPT-NeoX or Llama); anything else is
  one line naming ``file`` and the key."""
  kind = hf.get("model_type")
  if kind not in ("gpt_neox", "llama"):
    raise ValueError(f"{file}: model_type={kind!r} is not supported; allowed: gpt_neox, llama")

  def need(key):
    if key not in hf:
      raise ValueError(f"{file}: key {key!r} missing (a {kind} config has it)")
    return hf[key]

  rope = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
  theta = rope.get("rope_theta", hf.get("rope_theta", hf.get("rotary_emb_base", 10_000.0)))
  rope_type = rope.get("rope_type", rope.get("type", "default"))
  if rope_type == "llama3":
    scaling = ("llama3", float(rope["factor"]), float(rope["low_freq_factor"]),
               float(rope["high_freq_factor"]), int(rope["original_max_position_embeddings"]))
  elif rope_type in ("default", None):
    scaling = ()
  else:
    raise ValueError(f"{file}: rope type {rope_type!r} is not supported; allowed: default, llama3")
  n_head = need("num_attention_heads")
  d_model = need("hidden_size")
  out = dict(n_layer=need("num_hidden_layers"), d_model=d_model, n_head=n_head,
             d_ff=need("intermediate_size"), vocab_size=need("vocab_size"),
             rope_theta=float(theta), rope_scaling=scaling,
             tie_embeddings=bool(hf.get("tie_word_embeddings", kind == "llama")))
  head_dim = hf.get("head_dim") or d_model // n_head
  out["head_dim"] = 0 if head_dim == d_model // n_head else head_dim
  if kind == "gpt_neox":
    act = hf.get("hidden_act", "gelu")
    if act not in _GELU:
      raise ValueError(f"{file}: hidden_act={act!r}; allowed: {', '.join(_GELU)}")
    pct = rope.get("partial_rotary_factor", hf.get("rotary_pct", 0.25))
    out.update(norm="layernorm", norm_eps=float(hf.get("layer_norm_eps", 1e-5)), mlp="gelu",
               gelu_approximate=_GELU[act], n_kv_head=0, rotary_pct=float(pct),
               parallel_residual=bool(hf.get("use_parallel_residual", True)),
               attn_bias=bool(hf.get("attention_bias", True)), mlp_bias=True)
  else:
    if hf.get("hidden_act", "silu") != "silu":
      raise ValueError(f"{file}: hidden_act={hf['hidden_act']!r}; allowed: silu")
    out.update(norm="rmsnorm", norm_eps=float(hf.get("rms_norm_eps", 1e-6)), mlp="swiglu",
               n_kv_head=hf.get("num_key_value_heads") or n_head,
               rotary_pct=float(rope.get("partial_rotary_factor", 1.0)),
               parallel_residual=False, attn_bias=bool(hf.get("attention_bias", False)),
               mlp_bias=bool(hf.get("mlp_bias", False)))
  return out


def arch_of(cfg: ModelConfig) -> str:
  """The Hugging Face architecture that expresses ``cfg``: Llama for RMSNorm + SwiGLU, else
  GPT-NeoX (hh's own model is GPT-NeoX with sequential residual and zero MLP biases)."""
  if cfg.norm == "rmsnorm" and cfg.mlp == "swiglu":
    return "llama"
  if cfg.norm == "layernorm" and cfg.mlp == "gelu" and cfg.n_kv_head in (0, cfg.n_head) \
      and not cfg.tie_embeddings:
    return "gpt_neox"
  raise ValueError(f"model with norm={cfg.norm}, mlp={cfg.mlp}, n_kv_head={cfg.n_kv_head}, "
                   f"tie_embeddings={cfg.tie_embeddings} has no Hugging Face architecture; "
                   "allowed: rmsnorm+swiglu (Llama) or layernorm+gelu without GQA (GPT-NeoX)")


def hf_config(cfg: ModelConfig, arch: str) -> dict:
  """The config.json of ``cfg`` as a ``arch`` model (inverse of ``model_block``)."""
  rope = {"rope_theta": cfg.rope_theta, "rope_type": "default",
          "partial_rotary_factor": cfg.rotary_pct}
  if cfg.rope_scaling:
    _, factor, low, high, original = cfg.rope_scaling
    rope.update(rope_type="llama3", factor=factor, low_freq_factor=low, high_freq_factor=high,
                original_max_position_embeddings=original)
  common = dict(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                num_hidden_layers=cfg.n_layer, num_attention_heads=cfg.n_head,
                intermediate_size=cfg.d_ff, tie_word_embeddings=cfg.tie_embeddings,
                rope_parameters=rope, max_position_embeddings=2048, torch_dtype="float32",
                head_dim=cfg.d_head)
  if arch == "llama":
    return dict(common, model_type="llama", architectures=["LlamaForCausalLM"],
                num_key_value_heads=cfg.kv_heads, hidden_act="silu", rms_norm_eps=cfg.norm_eps,
                attention_bias=cfg.attn_bias, mlp_bias=cfg.mlp_bias)
  return dict(common, model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"],
              hidden_act="gelu_pytorch_tanh" if cfg.gelu_approximate else "gelu",
              layer_norm_eps=cfg.norm_eps, use_parallel_residual=cfg.parallel_residual,
              attention_bias=True)


# --- tensor layouts -----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Entry:
  """One hh parameter: its path, the Hugging Face tensor it comes from ("{i}": the layer) and
  the map of that tensor (one layer's) to hh's layout."""
  path: tuple[str, ...]
  hf: str
  to_hh: Callable[[np.ndarray], np.ndarray]
  layered: bool = True


def _qkv_part(cfg: ModelConfig, part: int, bias: bool):
  """GPT-NeoX's fused projection [H·3·K, D] (per head query, key, value) → hh's [D, H, K]."""
  h, k = cfg.n_head, cfg.d_head
  if bias:
    return lambda a: a.reshape(h, 3, k)[:, part]
  return lambda a: a.reshape(h, 3, k, -1)[:, part].transpose(2, 0, 1)


def entries(cfg: ModelConfig, arch: str) -> list[Entry]:
  """Every hh parameter of a DecoderLM of ``cfg`` with its Hugging Face source."""
  h, hk, k, d = cfg.n_head, cfg.kv_heads, cfg.d_head, cfg.d_model
  t = lambda a: a.T  # noqa: E731
  heads_in = lambda n: (lambda a: a.T.reshape(d, n, k))  # noqa: E731  [n·K, D] → [D, n, K]
  out_in = lambda a: a.T.reshape(h, k, d)  # noqa: E731  [D, H·K] → [H, K, D]
  heads_bias = lambda n: (lambda a: a.reshape(n, k))  # noqa: E731
  same = lambda a: a  # noqa: E731
  L = ("trunk", "layers")
  if arch == "gpt_neox":
    p = "gpt_neox.layers.{i}."
    qkv = p + "attention.query_key_value."
    out = [Entry(("trunk", "embed", "embedding"), "gpt_neox.embed_in.weight", same, False),
           Entry(("trunk", "ln_final", "scale"), "gpt_neox.final_layer_norm.weight", same, False),
           Entry(("trunk", "ln_final", "bias"), "gpt_neox.final_layer_norm.bias", same, False),
           Entry(("head", "kernel"), "embed_out.weight", t, False)]
    for ln, name in (("ln_attn", "input_layernorm"), ("ln_mlp", "post_attention_layernorm")):
      out += [Entry(L + (ln, "scale"), p + name + ".weight", same),
              Entry(L + (ln, "bias"), p + name + ".bias", same)]
    for part, name in enumerate(("query", "key", "value")):
      out.append(Entry(L + ("attn", name), qkv + "weight", _qkv_part(cfg, part, False)))
      if cfg.attn_bias:
        out.append(Entry(L + ("attn", f"{name}_bias"), qkv + "bias", _qkv_part(cfg, part, True)))
    out.append(Entry(L + ("attn", "out"), p + "attention.dense.weight", out_in))
    if cfg.attn_bias:
      out.append(Entry(L + ("attn", "out_bias"), p + "attention.dense.bias", same))
    out += [Entry(L + ("mlp", "wi"), p + "mlp.dense_h_to_4h.weight", t),
            Entry(L + ("mlp", "wi_bias"), p + "mlp.dense_h_to_4h.bias", same),
            Entry(L + ("mlp", "wo"), p + "mlp.dense_4h_to_h.weight", t),
            Entry(L + ("mlp", "wo_bias"), p + "mlp.dense_4h_to_h.bias", same)]
    return out
  p = "model.layers.{i}."
  out = [Entry(("trunk", "embed", "embedding"), "model.embed_tokens.weight", same, False),
         Entry(("trunk", "ln_final", "scale"), "model.norm.weight", same, False),
         Entry(L + ("ln_attn", "scale"), p + "input_layernorm.weight", same),
         Entry(L + ("ln_mlp", "scale"), p + "post_attention_layernorm.weight", same),
         Entry(L + ("attn", "query"), p + "self_attn.q_proj.weight", heads_in(h)),
         Entry(L + ("attn", "key"), p + "self_attn.k_proj.weight", heads_in(hk)),
         Entry(L + ("attn", "value"), p + "self_attn.v_proj.weight", heads_in(hk)),
         Entry(L + ("attn", "out"), p + "self_attn.o_proj.weight", out_in),
         Entry(L + ("mlp", "wi"), p + "mlp.up_proj.weight", t),
         Entry(L + ("mlp", "wg"), p + "mlp.gate_proj.weight", t),
         Entry(L + ("mlp", "wo"), p + "mlp.down_proj.weight", t)]
  if not cfg.tie_embeddings:
    out.append(Entry(("head", "kernel"), "lm_head.weight", t, False))
  if cfg.attn_bias:
    out += [Entry(L + ("attn", "query_bias"), p + "self_attn.q_proj.bias", heads_bias(h)),
            Entry(L + ("attn", "key_bias"), p + "self_attn.k_proj.bias", heads_bias(hk)),
            Entry(L + ("attn", "value_bias"), p + "self_attn.v_proj.bias", heads_bias(hk)),
            Entry(L + ("attn", "out_bias"), p + "self_attn.o_proj.bias", same)]
  if cfg.mlp_bias:
    out += [Entry(L + ("mlp", f"{w}_bias"), p + f"mlp.{n}_proj.bias", same)
            for w, n in (("wi", "up"), ("wg", "gate"), ("wo", "down"))]
  return out


def hf_layer(layer: dict, cfg: ModelConfig, arch: str, i: int) -> dict[str, np.ndarray]:
  """One hh layer's params (numpy, no leading layer axis) as the Hugging Face tensors of layer
  ``i`` (the inverse of ``entries``' maps)."""
  h, k, d = cfg.n_head, cfg.d_head, cfg.d_model
  a, m = layer["attn"], layer["mlp"]
  heads_out = lambda w: w.reshape(d, -1).T  # noqa: E731  [D, n, K] → [n·K, D]
  out_w = a["out"].reshape(h * k, d).T
  if arch == "gpt_neox":
    p = f"gpt_neox.layers.{i}."
    qkv = np.stack([a[n] for n in ("query", "key", "value")], axis=2)   # [D, H, 3, K]
    zeros = lambda n: np.zeros(n, qkv.dtype)  # noqa: E731
    biases = [a.get(f"{n}_bias", zeros((h, k))) for n in ("query", "key", "value")]
    t = {p + "attention.query_key_value.weight": qkv.reshape(d, -1).T,
         p + "attention.query_key_value.bias": np.stack(biases, axis=1).reshape(-1),
         p + "attention.dense.weight": out_w,
         p + "attention.dense.bias": a.get("out_bias", zeros(d)),
         p + "mlp.dense_h_to_4h.weight": m["wi"].T,
         p + "mlp.dense_h_to_4h.bias": m.get("wi_bias", zeros(cfg.d_ff)),
         p + "mlp.dense_4h_to_h.weight": m["wo"].T,
         p + "mlp.dense_4h_to_h.bias": m.get("wo_bias", zeros(d))}
    for ln, name in (("ln_attn", "input_layernorm"), ("ln_mlp", "post_attention_layernorm")):
      t[p + name + ".weight"] = layer[ln]["scale"]
      t[p + name + ".bias"] = layer[ln]["bias"]
    return t
  p = f"model.layers.{i}."
  t = {p + "self_attn.q_proj.weight": heads_out(a["query"]),
       p + "self_attn.k_proj.weight": heads_out(a["key"]),
       p + "self_attn.v_proj.weight": heads_out(a["value"]),
       p + "self_attn.o_proj.weight": out_w,
       p + "mlp.up_proj.weight": m["wi"].T, p + "mlp.gate_proj.weight": m["wg"].T,
       p + "mlp.down_proj.weight": m["wo"].T,
       p + "input_layernorm.weight": layer["ln_attn"]["scale"],
       p + "post_attention_layernorm.weight": layer["ln_mlp"]["scale"]}
  if cfg.attn_bias:
    for n, proj in (("query", "q"), ("key", "k"), ("value", "v")):
      t[p + f"self_attn.{proj}_proj.bias"] = a[f"{n}_bias"].reshape(-1)
    t[p + "self_attn.o_proj.bias"] = a["out_bias"]
  if cfg.mlp_bias:
    for w, n in (("wi", "up"), ("wg", "gate"), ("wo", "down")):
      t[p + f"mlp.{n}_proj.bias"] = m[f"{w}_bias"]
  return t


def hf_globals(params: dict, cfg: ModelConfig, arch: str) -> dict[str, np.ndarray]:
  """The embedding, final norm and head as Hugging Face tensors."""
  tr = params["trunk"]
  if arch == "gpt_neox":
    return {"gpt_neox.embed_in.weight": tr["embed"]["embedding"],
            "gpt_neox.final_layer_norm.weight": tr["ln_final"]["scale"],
            "gpt_neox.final_layer_norm.bias": tr["ln_final"]["bias"],
            "embed_out.weight": params["head"]["kernel"].T}
  out = {"model.embed_tokens.weight": tr["embed"]["embedding"],
         "model.norm.weight": tr["ln_final"]["scale"]}
  if not cfg.tie_embeddings:
    out["lm_head.weight"] = params["head"]["kernel"].T
  return out


# --- reading safetensors ------------------------------------------------------------------------

class Tensors:
  """The tensors of a Hugging Face directory by name, read lazily (memory-mapped) from
  ``model.safetensors`` or the files of ``model.safetensors.index.json``."""

  def __init__(self, path: str):
    import safetensors
    index = os.path.join(path, "model.safetensors.index.json")
    single = os.path.join(path, "model.safetensors")
    if io.isfile(index):
      weight_map = io.read_json(index)["weight_map"]
    elif io.isfile(single):
      weight_map = None
    else:
      raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json "
                              "(only safetensors checkpoints are read)")
    self.path = path
    self._files = {}
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
      for name in sorted(set(weight_map.values())) if weight_map else ["model.safetensors"]:
        file = os.path.join(path, name)
        if not io.isfile(file):
          raise FileNotFoundError(f"{index}: names {name}, which is not there")
        self._files[name] = safetensors.safe_open(file, framework="flax")
    self.where = weight_map or {k: "model.safetensors" for k in self._files[
        "model.safetensors"].keys()}

  def names(self) -> set[str]:
    return set(self.where)

  def shape(self, name: str) -> tuple[int, ...]:
    return tuple(self._files[self.where[name]].get_slice(name).get_shape())

  def get(self, name: str) -> np.ndarray:
    if name not in self.where:
      raise KeyError(name)
    with jax.default_device(jax.local_devices(backend="cpu")[0]):
      return np.asarray(self._files[self.where[name]].get_tensor(name))


def _check_tensors(tensors: Tensors, cfg: ModelConfig, arch: str, abstract: dict,
                   file: str, hf_vocab: int):
  """Every tensor hh needs is there with the shape config.json implies; each mismatch is one
  line naming the file and the tensor."""
  wanted = set()
  for e in entries(cfg, arch):
    names = [e.hf.format(i=i) for i in range(cfg.n_layer)] if e.layered else [e.hf]
    want = _get(abstract, e.path).shape[1:] if e.layered else _get(abstract, e.path).shape
    for name in names:
      wanted.add(name)
      if name not in tensors.where:
        raise ValueError(f"{file}: tensor {name} missing (config.json describes a {arch} model "
                         "that has it)")
      if e.path[-1] == "embedding":
        want = (hf_vocab, want[1])
      elif e.path == ("head", "kernel"):
        want = (want[0], hf_vocab)
      try:
        got = e.to_hh(np.empty(tensors.shape(name), np.bool_)).shape
      except ValueError:  # a reshape that the tensor's size does not allow
        got = None
      if got != tuple(want):
        raise ValueError(f"{file}: tensor {name} has shape {tensors.shape(name)}, which does not "
                         f"fit config.json (hh {'/'.join(e.path)} {tuple(want)})")
  # a tied checkpoint may still carry its head (a copy of the embedding): not read
  ignored = _BUFFERS + (("lm_head.weight", "embed_out.weight") if cfg.tie_embeddings else ())
  extra = sorted(n for n in tensors.names() - wanted if not n.endswith(ignored))
  if extra:
    raise ValueError(f"{file}: tensor {extra[0]} is not part of a {arch} model as config.json "
                     f"describes it ({len(extra)} such tensors)")


def _has(tree: dict, path: tuple[str, ...]) -> bool:
  for k in path:
    if not isinstance(tree, dict) or k not in tree:
      return False
    tree = tree[k]
  return True


def _get(tree: dict, path: tuple[str, ...]):
  for k in path:
    tree = tree[k]
  return tree


def _set(tree: dict, path: tuple[str, ...], value):
  for k in path[:-1]:
    tree = tree.setdefault(k, {})
  tree[path[-1]] = value



# --- streaming ----------------------------------------------------------------------------------

def _stream(tensors: Tensors, e: Entry, cfg: ModelConfig, shape, sharding, dtype,
            hf_vocab: int) -> jax.Array:
  """One hh parameter as a jax.Array in ``sharding``: each device's slice built from the layers
  it spans, one Hugging Face tensor at a time. Rows past the checkpoint's vocabulary (added
  tokenizer pieces) are the mean of its rows."""
  def one(i: int | None) -> np.ndarray:
    a = e.to_hh(tensors.get(e.hf.format(i=i) if i is not None else e.hf))
    a = np.asarray(a, np.float32)
    if e.path[-1] == "embedding" and a.shape[0] < shape[0]:
      a = np.concatenate([a, np.repeat(a.mean(0, keepdims=True), shape[0] - a.shape[0], 0)])
    if e.path == ("head", "kernel") and a.shape[1] < shape[1]:
      a = np.concatenate([a, np.repeat(a.mean(1, keepdims=True), shape[1] - a.shape[1], 1)], 1)
    return a

  def callback(index):
    if not e.layered:
      return one(None)[index].astype(dtype)
    layers = range(cfg.n_layer)[index[0]]
    return np.stack([one(i)[index[1:]] for i in layers]).astype(dtype)

  return jax.make_array_from_callback(tuple(shape), sharding, callback)


def params(path: str, cfg: ModelConfig, abstract: dict, shardings: dict) -> dict:
  """The params of Hugging Face directory ``path`` for a model of ``cfg``, streamed into
  ``shardings`` (``abstract``: their shapes and dtypes; a subtree, e.g. ``{"trunk": ...}`` for a
  PM, reads only those). Checked first: every tensor present and of the shape config.json
  implies."""
  hf = read_hf_config(path)
  arch = hf["model_type"]
  tensors = Tensors(path)
  _check_tensors(tensors, cfg, arch, _abstract_lm(cfg), os.path.join(path, "model.safetensors"),
                 hf["vocab_size"])
  out: dict = {}
  for e in entries(cfg, arch):
    if not _has(abstract, e.path):
      continue
    a = _get(abstract, e.path)
    _set(out, e.path, _stream(tensors, e, cfg, a.shape, _get(shardings, e.path), a.dtype,
                              hf["vocab_size"]))
  return out


def _abstract_lm(cfg: ModelConfig) -> dict:
  """The shapes of a DecoderLM's params (nothing allocated)."""
  import flax.linen as nn
  import jax.numpy as jnp

  from hh.models.transformer import DecoderLM
  x = jnp.zeros((1, 2), jnp.int32)
  return nn.unbox(jax.eval_shape(lambda: DecoderLM(cfg).init(jax.random.PRNGKey(0), x, x)))[
      "params"]


def model_config(path: str, vocab_size: int = 0, **overrides) -> ModelConfig:
  """The ModelConfig of Hugging Face directory ``path`` (its vocabulary, or ``vocab_size`` when
  larger: hh's added pieces); ``overrides``: other fields (e.g. ``dtype``)."""
  block = model_block(read_hf_config(path), os.path.join(path, "config.json"))
  block["vocab_size"] = max(block["vocab_size"], vocab_size)
  block["rope_scaling"] = tuple(block["rope_scaling"])
  return ModelConfig(**block, **overrides)
