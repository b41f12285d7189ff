"""Hugging Face interop against transformers itself: random-weight GPT-NeoX (partial rotary,
parallel residual) and Llama (grouped-query attention, Llama 3 rope scaling) models built and
saved by transformers on CPU, imported by hh.convert; logits, greedy continuations, the KV-cache
decode and the exported directory checked against transformers' own outputs."""
import json
import os
import re
import subprocess
import sys

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from hh import convert  # noqa: E402
from hh import tokenizer as tok_lib  # noqa: E402
from hh.models import DecoderLM, ModelConfig, decoding  # noqa: E402
from hh.models import hf as hf_lib  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 320  # more ids than the test tokenizer has (with hh's pieces), as real checkpoints


def _hf_model(kind: str, vocab: int = VOCAB):
  torch.manual_seed(0)
  if kind == "gpt_neox":
    cfg = transformers.GPTNeoXConfig(
        vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, rotary_pct=0.5, use_parallel_residual=True, initializer_range=0.2,
        layer_norm_eps=1e-5)
    return transformers.GPTNeoXForCausalLM(cfg).eval()
  cfg = transformers.LlamaConfig(
      vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
      num_key_value_heads=2, intermediate_size=64, initializer_range=0.2,
      tie_word_embeddings=False, rope_scaling={
          "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16, "rope_theta": 500_000.0})
  return transformers.LlamaForCausalLM(cfg).eval()


def _hf_tokenizer(path: str):
  """A small byte-level BPE tokenizer.json (as GPT-NeoX's and Llama 3's are)."""
  import tokenizers
  from tokenizers import decoders, models, pre_tokenizers, trainers
  tk = tokenizers.Tokenizer(models.BPE())
  tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tk.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tk.train_from_iterator(["the cat sat on the mat", "Human: hi there", "Assistant: hello"] * 20,
                         trainer)
  tk.save(path)
  return path


@pytest.fixture(scope="module", params=["gpt_neox", "llama"])
def hf_dir(request, tmp_path_factory):
  d = tmp_path_factory.mktemp(request.param)
  model = _hf_model(request.param)
  model.save_pretrained(d)
  _hf_tokenizer(str(d / "tokenizer.json"))
  return str(d), model


def _ragged_batch():
  """Token ids [3, 10] with rows 1 and 2 left-padded, their mask and HF position ids."""
  tokens = np.random.RandomState(0).randint(0, 96, (3, 10))
  mask = np.ones((3, 10), np.int64)
  mask[1, :4] = 0
  mask[2, :2] = 0
  return tokens, mask, np.maximum(np.cumsum(mask, -1) - 1, 0)


def _hf_logits(model, tokens, mask, positions):
  with torch.no_grad():
    return model(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                 position_ids=torch.tensor(positions)).logits.numpy()


def test_imported_logits_equal_transformers(hf_dir):
  path, hf = hf_dir
  tokens, mask, positions = _ragged_batch()
  model, params = convert.load(path)
  got = np.asarray(model.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(mask)))
  want = _hf_logits(hf, tokens, mask, positions)
  real = mask.astype(bool)
  np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)
  # the documented call without a mask: every token real
  full = np.asarray(model.apply({"params": params}, jnp.asarray(tokens)))
  np.testing.assert_allclose(full[0], want[0], atol=1e-4, rtol=0)


def test_greedy_continuation_and_cache_decode(hf_dir):
  path, hf = hf_dir
  model, params = convert.load(path)
  prompt = np.array([[5, 17, 33, 2, 71, 9]])
  with torch.no_grad():
    want = hf.generate(torch.tensor(prompt), max_new_tokens=8, do_sample=False,
                       pad_token_id=0).numpy()[0, prompt.shape[1]:]
  logits, cache, kv_mask, pos = decoding.prefill(model, params, jnp.asarray(prompt),
                                                 jnp.ones_like(prompt), 16)
  out, token = [], jnp.argmax(logits[:, -1], -1)
  step_logits = []
  for t in range(8):
    out.append(int(token[0]))
    logits1, cache, kv_mask = decoding.decode_step(model, params, token, cache, kv_mask,
                                                   jnp.asarray(prompt.shape[1] + t), pos + t)
    step_logits.append(logits1)
    token = jnp.argmax(logits1, -1)
  assert out == want.tolist()
  # the cached decode equals the full forward over prompt + continuation
  seq = jnp.asarray(np.concatenate([prompt[0], out])[None])
  full = np.asarray(model.apply({"params": params}, seq))
  cached = np.stack([np.asarray(x[0]) for x in step_logits])
  np.testing.assert_allclose(cached, full[0, prompt.shape[1]:], atol=1e-5, rtol=0)


def test_import_cli_then_export_loads_in_transformers(hf_dir, tmp_path):
  path, hf = hf_dir
  dst, back = tmp_path / "imported", tmp_path / "exported"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  run = lambda *a: subprocess.run([sys.executable, "-m", "hh.convert", *a], cwd=REPO, env=env,  # noqa: E731
                                  capture_output=True, text=True, timeout=600)
  r = run("import", f"--src={path}", f"--dst={dst}", "--config.model.dtype=float32")
  assert r.returncode == 0, r.stderr[-2000:]
  assert (dst / "config.json").exists() and (dst / "tokenizer.json").exists()
  tok = tok_lib.Tokenizer.load(str(dst / "tokenizer.json"))
  imported = json.loads((dst / "imported.json").read_text())
  assert imported["vocab_size"] == max(VOCAB, tok.vocab_size)
  r = run("export", f"--src={dst}", f"--dst={back}")
  assert r.returncode == 0, r.stderr[-2000:]
  again = transformers.AutoModelForCausalLM.from_pretrained(back).eval()
  tokens, mask, positions = _ragged_batch()
  got, want = _hf_logits(again, tokens, mask, positions), _hf_logits(hf, tokens, mask, positions)
  real = mask.astype(bool)
  np.testing.assert_allclose(got[real], want[real], atol=1e-4, rtol=0)
  model, params = convert.load(str(dst))
  mine = np.asarray(model.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(mask)))
  np.testing.assert_allclose(mine[real], got[real], atol=1e-4, rtol=0)


def test_pieces_past_the_vocabulary_get_mean_rows(tmp_path):
  """A checkpoint without spare rows for hh's pieces: the new embedding and head rows are the
  means of the old ones, and the old logits are unchanged."""
  hf = _hf_model("llama", vocab=280)
  hf.save_pretrained(tmp_path)
  _hf_tokenizer(str(tmp_path / "tokenizer.json"))
  model, params = convert.load(str(tmp_path))
  n = tok_lib.for_dir(str(tmp_path)).vocab_size
  assert n > 280 and model.cfg.vocab_size == n
  emb = np.asarray(params["trunk"]["embed"]["embedding"])
  np.testing.assert_allclose(emb[280:], np.broadcast_to(emb[:280].mean(0), (n - 280, 32)),
                             rtol=1e-6)
  tokens, mask, positions = _ragged_batch()
  got = np.asarray(model.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(mask)))
  real = mask.astype(bool)
  np.testing.assert_allclose(got[real][:, :280], _hf_logits(hf, tokens, mask, positions)[real],
                             atol=1e-4, rtol=0)


def test_hh_model_exports_as_gpt_neox(tmp_path):
  """hh's own architecture (sequential residual, full rotary, no biases) is a GPT-NeoX model
  with zero biases: exported, transformers computes the same logits."""
  from hh.train import checkpoint
  cfg = ModelConfig(vocab_size=VOCAB, n_layer=2, d_model=32, n_head=4, d_ff=64, init_std=0.2)
  model = DecoderLM(cfg)
  tokens, mask, positions = _ragged_batch()
  params = model.init(jax.random.PRNGKey(0), jnp.asarray(tokens), jnp.asarray(mask))["params"]
  # LayerNorm biases away from 0 and scales away from 1, so a dropped norm term shows
  params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(1), a.shape),
                        flax.linen.unbox(params))
  src = tmp_path / "hh"
  mngr = checkpoint.manager(str(src), 1, 1)
  checkpoint.save(mngr, 0, {"params": params}, {}, force=True)
  mngr.wait_until_finished()
  from configs import common
  block = common.model_config("tiny").to_dict() | dict(
      n_layer=2, d_model=32, n_head=4, d_ff=64, vocab_size=VOCAB, dtype="float32")
  (src / "config.json").write_text(json.dumps({"model": block}))
  tok_lib.add_reserved(_hf_tokenizer(str(tmp_path / "tokenizer.json")),
                       str(src / "tokenizer.json"))
  assert convert.export_hf(str(src), str(tmp_path / "out")) == "gpt_neox"
  hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "out").eval()
  want = np.asarray(model.apply({"params": params}, jnp.asarray(tokens), jnp.asarray(mask)))
  real = mask.astype(bool)
  np.testing.assert_allclose(_hf_logits(hf, tokens, mask, positions)[real], want[real],
                             atol=1e-4, rtol=0)


def test_hf_round_trip_keeps_every_tensor(hf_dir, tmp_path):
  """HF → hh → HF gives back each tensor exactly (the two layout maps are inverses)."""
  path, hf = hf_dir
  model, params = convert.load(path)
  cfg, arch = model.cfg, hf_lib.read_hf_config(path)["model_type"]
  host = jax.tree.map(np.asarray, params)
  back = hf_lib.hf_globals(host, cfg, arch)
  for i in range(cfg.n_layer):
    back |= hf_lib.hf_layer(jax.tree.map(lambda a, i=i: a[i], host["trunk"]["layers"]), cfg,
                             arch, i)
  from safetensors.numpy import load_file
  orig = {k: v for k, v in load_file(os.path.join(path, "model.safetensors")).items()
          if not k.endswith(hf_lib._BUFFERS)}
  assert set(back) == set(orig)
  for k in orig:
    np.testing.assert_array_equal(back[k], orig[k], err_msg=k)


# --- tokenizers ----------------------------------------------------------------------------------

TEXTS = ["\n\nHuman: What's 2+2?  \n\nAssistant: It is 4.\tÜñï 😀\n", "", "a\n\n\nb   c"]


def test_hf_tokenizer_gains_reserved_pieces(tmp_path):
  src = _hf_tokenizer(str(tmp_path / "tokenizer.json"))
  with pytest.raises(ValueError, match=r"tokenizer.json lacks the reserved piece '<\|eoc\|>'"):
    tok_lib.Tokenizer.load(src)
  dst = tok_lib.add_reserved(src, str(tmp_path / "out" / "tokenizer.json"))
  tok = tok_lib.Tokenizer.load(dst)
  assert isinstance(tok, tok_lib.HFTokenizer)
  for t in TEXTS:
    assert tok.decode(tok.encode(t)) == t
  ids = tok.encode("\n\nHuman: hi\n\nAssistant: hello")
  assert ids[0] == tok.human_id and tok.assistant_id in ids
  assert tok.eoc_id not in tok.encode(tok_lib.EOC)  # special: no text encodes to it
  assert tok.decode(ids + [tok.eoc_id, tok.eos_id]) == "\n\nHuman: hi\n\nAssistant: hello"
  assert tok.eos_id == 0  # its <|endoftext|>
  import pickle
  assert pickle.loads(pickle.dumps(tok)).encode("a b") == tok.encode("a b")


def test_sentencepiece_tokenizer_gains_reserved_pieces(tmp_path):
  import sentencepiece as spm
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(["the cat sat on the mat", "Human: hi", "Assistant: hello"] * 50),
      model_prefix=str(tmp_path / "sp"), vocab_size=320, model_type="bpe", byte_fallback=True,
      normalization_rule_name="identity", remove_extra_whitespaces=False,
      add_dummy_prefix=False, minloglevel=2)
  src = str(tmp_path / "sp.model")
  with pytest.raises(ValueError, match=r"sp.model lacks the reserved piece"):
    tok_lib.Tokenizer.load(src)
  tok = tok_lib.Tokenizer.load(tok_lib.add_reserved(src, str(tmp_path / "tokenizer.model")))
  assert tok.vocab_size == 320 + 4
  for t in TEXTS:
    assert tok.decode(tok.encode(t)) == t
  ids = tok.encode("\n\nHuman: hi\n\nAssistant: hello")
  assert ids[0] == tok.human_id and tok.assistant_id in ids
  assert tok.eoc_id not in tok.encode(tok_lib.EOC)


# --- bad input -----------------------------------------------------------------------------------

def _import(src, dst):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  return subprocess.run([sys.executable, "-m", "hh.convert", "import", f"--src={src}",
                         f"--dst={dst}"], cwd=REPO, env=env, capture_output=True, text=True,
                        timeout=600)


def _broken_copy(tmp_path, edit_config=None, edit_tensors=None):
  from safetensors.numpy import load_file, save_file
  src = tmp_path / "src"
  _hf_model("gpt_neox").save_pretrained(src)
  _hf_tokenizer(str(src / "tokenizer.json"))
  if edit_config:
    cfg = json.loads((src / "config.json").read_text())
    edit_config(cfg)
    (src / "config.json").write_text(json.dumps(cfg))
  if edit_tensors:
    tensors = load_file(src / "model.safetensors")
    edit_tensors(tensors)
    save_file(tensors, src / "model.safetensors", metadata={"format": "pt"})
  return src


@pytest.mark.parametrize("case,expected", [
    ("arch", r"config.json: model_type='gpt2' is not supported; allowed: gpt_neox, llama"),
    ("missing", r"model.safetensors: tensor gpt_neox.layers.1.mlp.dense_4h_to_h.weight missing"),
    ("shape", r"model.safetensors: tensor gpt_neox.layers.0.attention.dense.weight has shape "
              r"\(32, 16\), which does not fit config.json"),
    ("config", r"config.json: intermediate_size=80 .*|model.safetensors: tensor "
               r"gpt_neox.layers.0.mlp.dense_h_to_4h.weight has shape \(64, 32\)"),
])
def test_bad_checkpoints_are_one_line_and_leave_nothing(tmp_path, case, expected):
  edits = {
      "arch": dict(edit_config=lambda c: c.update(model_type="gpt2")),
      "missing": dict(edit_tensors=lambda t: t.pop("gpt_neox.layers.1.mlp.dense_4h_to_h.weight")),
      "shape": dict(edit_tensors=lambda t: t.update({
          "gpt_neox.layers.0.attention.dense.weight": np.zeros((32, 16), np.float32)})),
      "config": dict(edit_config=lambda c: c.update(intermediate_size=80)),
  }
  src = _broken_copy(tmp_path, **edits[case])
  dst = tmp_path / "dst"
  r = _import(src, dst)
  assert r.returncode != 0
  lines = r.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("hh.convert: error: "), r.stderr[-2000:]
  assert re.search(expected, lines[0]), lines[0]
  assert not dst.exists() and not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_tokenizer_without_pieces_for_a_stage_is_one_line(tmp_path):
  """A stage given a tokenizer that lacks hh's pieces names the file and the piece."""
  src = _hf_tokenizer(str(tmp_path / "tokenizer.json"))
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  r = subprocess.run([sys.executable, "-m", "hh.main", "--config=configs/lm.py:size=nano",
                      f"--config.tokenizer.path={src}", f"--workdir={tmp_path / 'w'}"],
                     cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert r.returncode != 0
  lines = r.stderr.strip().splitlines()
  assert lines[-1].startswith("hh: error: tokenizer ") and "tokenizer.json lacks the reserved " \
      "piece '<|eoc|>'" in lines[-1], r.stderr[-2000:]
