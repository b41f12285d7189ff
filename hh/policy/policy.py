"""A policy loaded for sampling and scoring: an LM workdir (the ``lm`` or ``cd`` stage) → model,
params, tokenizer; sampling text responses to contexts; log-likelihoods of responses.

A policy is the LM with, optionally, a text ``prefix`` before every context (the "prompted"
policy of Bai et al. 2022, App. A.1: the HHH prompt in the context). Prompts are ``prefix + context +
"\\n\\nAssistant:"``, left-padded to their bucket; a response runs until the turn ends (the next
``"\\n\\nHuman:"`` piece or ``</s>``, ``sample.end_of_turn_ids``), which is not part of its text.

Shapes: R rows (prompts × samples), N = max_new_tokens.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hh import io, sharding
from hh import tokenizer as tok_lib
from hh.lm import step as lm_step
from hh.models import DecoderLM, ModelConfig, hf
from hh.policy import sample as sample_lib
from hh.tokenizer import PAD_ID
from hh.train import build as build_lib


@dataclasses.dataclass
class Policy:
  """An LM ready to sample: ``prefix`` is prepended to every context."""
  name: str
  model: DecoderLM
  params: Any
  tok: tok_lib.Tokenizer
  mesh: Any
  rules: tuple
  prefix: str = ""
  workdir: str = ""

  def with_prefix(self, name: str, prefix: str) -> "Policy":
    return dataclasses.replace(self, name=name, prefix=prefix)


def read_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not io.exists(path):
    raise FileNotFoundError(f"{workdir!r}: no config.json (not a finished lm or cd workdir)")
  return ml_collections.ConfigDict(io.read_json(path))


def load_tokenizer(workdir: str, cfg=None):
  """An LM workdir's tokenizer: its own file, else its ``config.tokenizer.path``; a Hugging Face
  model directory's with hh's pieces added (``hh.tokenizer.for_dir``)."""
  if hf.is_hf_dir(workdir):
    return tok_lib.for_dir(workdir)
  if tok_lib.find(workdir) is None:
    cfg = cfg or read_config(workdir)
    return tok_lib.for_dir(workdir, cfg.tokenizer.path)
  return tok_lib.for_dir(workdir)


def load(workdir: str, name: str | None = None, mesh=None, like=None) -> Policy:
  """The latest params of an LM workdir (or a Hugging Face model directory), restored into the
  shards of its own config's mesh (or ``mesh``). A Hugging Face directory has no hh config: its
  model options come from its config.json, the rest (dtype, mesh, rules) from ``like`` (the
  running stage's config)."""
  tok = load_tokenizer(workdir)
  if hf.is_hf_dir(workdir):
    if like is None:
      raise ValueError(f"{workdir!r}: a Hugging Face directory needs the running config")
    cfg = like
    model_cfg = hf.model_config(workdir, tok.vocab_size, dtype=jnp.dtype(like.model.dtype))
  else:
    cfg = read_config(workdir)
    model_cfg = ModelConfig.from_config(cfg.model, tok.vocab_size)
  mesh = mesh or sharding.make_mesh(cfg.mesh)
  model = DecoderLM(model_cfg)
  rules = sharding.rules(cfg)
  example = (jnp.zeros((1, 8), jnp.int32),) * 2
  with jax.set_mesh(mesh):
    params = build_lib.inference_params(model, example, workdir, mesh, rules)
  return Policy(name or os.path.basename(workdir.rstrip("/")), model, params, tok, mesh, rules,
                workdir=workdir)


@dataclasses.dataclass
class Samples:
  """Responses to R prompt rows: texts and the arrays the sampler returned (host numpy)."""
  contexts: list[str]        # [R] the context of each row (without the policy's prefix)
  texts: list[str]           # [R] response text, stripped (without the turn-ending token)
  tokens: np.ndarray         # [R, N] sampled ids, PAD after the end
  mask: np.ndarray           # [R, N] 1 on the response, its ending token included
  logp_t1: np.ndarray        # [R, N] log π(token) at T = 1
  finished: np.ndarray       # [R] ended its turn within N tokens
  length: np.ndarray         # [R] tokens in the response (ending token included)


def prompt_ids(policy: Policy, contexts: Sequence[str], buckets: Sequence[int],
               key: str = "config.sampling.buckets") -> list[list[int]]:
  """Token ids of ``prefix + context + "\\n\\nAssistant:"``; a prompt longer than the largest
  bucket is an error naming ``key`` (cutting it would silently change the task)."""
  ids = policy.tok.encode_batch([policy.prefix + c + tok_lib.ASSISTANT for c in contexts])
  longest = max(buckets)
  for i, row in enumerate(ids):
    if len(row) > longest:
      raise ValueError(f"{key}: prompt {i} has {len(row)} tokens, longer than the largest bucket "
                       f"{longest}; add a larger bucket (allowed: any sizes ≥ the longest prompt)")
  return ids


def left_padded(rows: Sequence[Sequence[int]], length: int) -> tuple[np.ndarray, np.ndarray]:
  out = np.full((len(rows), length), PAD_ID, np.int32)
  mask = np.zeros((len(rows), length), np.int32)
  for i, r in enumerate(rows):
    if r:
      out[i, length - len(r):] = r
      mask[i, length - len(r):] = 1
  return out, mask


def generate(policy: Policy, contexts: Sequence[str], n: int, cfg: sample_lib.SamplingConfig,
             seed: int, batch_size: int, buckets: Sequence[int]) -> Samples:
  """``n`` samples for each context (rows context-major: row i·n + j is sample j of context i).

  Row r draws with ``fold_in(key(seed), r)``, so a context's samples do not depend on the batch
  size. Rows are batched by prompt length (one compilation per bucket and batch size); the last
  batch of a bucket is padded with repeats.
  """
  if n < 1:
    raise ValueError(f"n={n}: samples per prompt must be ≥ 1")
  batch_size = sharding.padded_batch_size(batch_size, policy.mesh)
  ids = prompt_ids(policy, contexts, buckets)
  rows = [(i * n + j, i) for i in range(len(contexts)) for j in range(n)]
  sampler = sample_lib.Sampler(policy.model, policy.mesh, policy.rules, cfg, buckets)
  order = sorted(rows, key=lambda r: len(ids[r[1]]))
  out = {k: [None] * len(rows) for k in ("tokens", "mask", "logp_t1", "finished", "length")}
  rng = jax.random.PRNGKey(seed)
  with jax.set_mesh(policy.mesh):
    for start in range(0, len(order), batch_size):
      chunk = order[start:start + batch_size]
      chunk = chunk + [chunk[-1]] * (batch_size - len(chunk))
      longest = max(len(ids[c]) for _, c in chunk)
      prompt, mask = left_padded([ids[c] for _, c in chunk], sample_lib.bucket(longest, buckets))
      res = sampler(policy.params, prompt, mask, np.array([r for r, _ in chunk]), rng)
      for k, (row, _) in enumerate(chunk[:min(batch_size, len(order) - start)]):
        for key in out:
          out[key][row] = res[key][k]
  arrays = {k: np.stack(v) for k, v in out.items()}
  stops = set(cfg.stop_ids)
  texts = []
  for toks, m in zip(arrays["tokens"], arrays["mask"]):
    body = [int(t) for t, keep in zip(toks, m) if keep and int(t) not in stops]
    texts.append(policy.tok.decode(body).strip())
  return Samples(contexts=[contexts[c] for _, c in rows], texts=texts, **arrays)


def sampling_config(policy: Policy, sampling_cfg) -> sample_lib.SamplingConfig:
  """``config.sampling`` → a SamplingConfig whose turns end in hh's format for this tokenizer;
  bad values name their key."""
  try:
    return sample_lib.SamplingConfig(
        max_new_tokens=sampling_cfg.max_new_tokens, temperature=sampling_cfg.temperature,
        top_k=sampling_cfg.top_k, top_p=sampling_cfg.top_p,
        stop_ids=sample_lib.end_of_turn_ids(policy.tok), cache_block=sampling_cfg.cache_block)
  except ValueError as e:
    raise ValueError(f"config.sampling.{e}") from None


def response_log_probs(policy: Policy, samples: Samples, batch_size: int) -> np.ndarray:
  """Σ over each response's tokens of log π(token | policy's prompt, response so far) [R]
  (float64), for ``policy`` — not necessarily the one that sampled (KL(π‖π0), Bai et al. 2022, §4.1)."""
  fn = build_lib.jit_forward(lambda p, t, m: lm_step.log_probs(policy.model, p, t, m),
                             policy.mesh, policy.rules)
  prompts = policy.tok.encode_batch([policy.prefix + c + tok_lib.ASSISTANT
                                     for c in samples.contexts])
  prompt_len = -(-max(len(r) for r in prompts) // 64) * 64  # one compilation per call
  batch_size = sharding.padded_batch_size(batch_size, policy.mesh)
  total = np.zeros(len(prompts))
  with jax.set_mesh(policy.mesh):
    for start in range(0, len(prompts), batch_size):
      sl = slice(start, start + batch_size)
      p, pm = left_padded(prompts[sl], prompt_len)
      tokens = np.concatenate([p, samples.tokens[sl]], 1)
      mask = np.concatenate([pm, samples.mask[sl]], 1).astype(np.int32)
      k = len(tokens)
      if k < batch_size:  # fixed shapes: one compilation
        tokens = np.concatenate([tokens, np.repeat(tokens[-1:], batch_size - k, 0)])
        mask = np.concatenate([mask, np.repeat(mask[-1:], batch_size - k, 0)])
      arrays = sharding.whole_batch({"t": tokens, "m": mask}, policy.mesh)
      lp = sharding.to_host(fn(policy.params, arrays["t"], arrays["m"])).astype(np.float64)
      total[sl] = (lp[:k, prompt_len:] * samples.mask[sl]).sum(-1)
  return total


def text_log_probs(policy: Policy, contexts: Sequence[str], responses: Sequence[str],
                   batch_size: int, max_tokens: int) -> tuple[np.ndarray, np.ndarray]:
  """Σ log π of each response given its context (the policy's prompt, as ``generate`` builds it)
  and its number of tokens → ([R] float64, [R] int). ``responses``: the text after
  ``"\n\nAssistant:"`` as in a transcript (e.g. ``" Sure, …"``), cut to ``max_tokens`` tokens."""
  ids = policy.tok.encode_batch(list(responses))
  tokens = np.full((len(ids), max_tokens), PAD_ID, np.int32)
  mask = np.zeros((len(ids), max_tokens), np.int32)
  for i, row in enumerate(ids):
    row = row[:max_tokens]
    tokens[i, :len(row)], mask[i, :len(row)] = row, 1
  rows = Samples(contexts=list(contexts), texts=list(responses), tokens=tokens, mask=mask,
                 logp_t1=np.zeros(tokens.shape, np.float32), finished=np.zeros(len(ids), bool),
                 length=mask.sum(1))
  return response_log_probs(policy, rows, batch_size), mask.sum(1)
