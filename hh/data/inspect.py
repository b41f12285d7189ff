"""See what the model will see: counts, turns histogram, token lengths and decoded examples.

  python -m hh.data.inspect --dataset=hh_rlhf/harmless-base --split=test \\
      --source_dir=/path/to/hh-rlhf --data_dir=/tmp/tfds

Builds the dataset if needed (TensorFlow-free), tokenises every example with ``--tokenizer`` (or
a tokenizer trained on the split and cached in ``data_dir``) and prints the summary.
"""
from __future__ import annotations

import collections
import os

import numpy as np
from absl import app, flags, logging

from hh import cli, io

_LINE = "=" * 78


def summarize(source, tok, seq_len: int) -> dict:
  """Counts, Human-turn histogram and token-length percentiles of a comparison split."""
  from hh.data.pipeline import pm_sequence
  from hh.data.tfds_io import text
  from hh.tokenizer import ASSISTANT
  turns = collections.Counter()
  lengths = collections.defaultdict(list)
  truncated = 0
  for i in range(len(source)):
    ex = source[i]
    turns[int(ex["num_human_turns"])] += 1
    if "chosen" not in ex:  # red-team transcripts
      lengths["transcript"].append(len(tok.encode(text(ex["transcript"]))))
      continue
    ctx = text(ex["context_text"])
    lengths["context"].append(len(tok.encode(ctx)))
    for side in ("chosen", "rejected"):
      n = len(tok.encode(ASSISTANT + text(ex[side])))
      lengths[side].append(n)
      lengths["pm_sequence"].append(lengths["context"][-1] + n + 1)
      truncated += pm_sequence(tok, ctx, text(ex[side]), seq_len)[3]
  pct = {k: np.percentile(v, [50, 90, 99, 100]).tolist() for k, v in lengths.items()}
  return {"examples": len(source), "turns": dict(sorted(turns.items())), "lengths": pct,
          "responses_cut_at_seq_len": int(truncated)}


def report(builder, split: str, tok, seq_len: int, n_examples: int) -> str:
  from hh.data import tfds_io
  from hh.data.pipeline import pm_sequence
  source = tfds_io.source(builder, split)
  s = summarize(source, tok, seq_len)
  meta = builder.info.metadata.get(split, {}) if builder.info.metadata else {}
  out = [f"{builder.info.full_name} [{split}]: {s['examples']} examples",
         f"build counts: {dict(meta)}",
         "turns histogram (Human turns: examples): " +
         ", ".join(f"{k}: {v}" for k, v in s["turns"].items()),
         f"token lengths (p50, p90, p99, max) with a {tok.vocab_size}-piece tokenizer:"]
  out += [f"  {k:<12} " + ", ".join(f"{x:.0f}" for x in v) for k, v in s["lengths"].items()]
  out.append(f"responses cut at seq_len={seq_len}: {s['responses_cut_at_seq_len']}")
  for i in range(min(n_examples, len(source))):
    ex = source[i]
    out.append(_LINE)
    if "chosen" not in ex:
      out.append(tfds_io.text(ex["transcript"])[:2000])
      continue
    for side in ("chosen", "rejected"):
      ids, mask, eoc, _ = pm_sequence(tok, tfds_io.text(ex["context_text"]),
                                      tfds_io.text(ex[side]), seq_len)
      shown = tok.sp.decode([int(t) for t in ids[:eoc]])  # what the PM reads, before <|eoc|>
      out.append(f"--- example {i} {side} ({int(mask.sum())} tokens, EOC at {eoc}):")
      out.append(shown[-1500:])
  return "\n".join(out)


def _tokenizer(path: str | None, source, data_dir: str, vocab: int):
  from hh import tokenizer
  from hh.data.tfds_io import text
  if path:
    return tokenizer.Tokenizer.load(path)
  cached = os.path.join(data_dir, f"inspect_tokenizer_{vocab}.model")
  if io.exists(cached):
    return tokenizer.Tokenizer.load(cached)
  key = "chosen_transcript" if "chosen_transcript" in source[0] else "transcript"
  lines = [line for i in range(len(source)) for line in text(source[i][key]).split("\n")]
  return tokenizer.train(lines, vocab, cached, key="--vocab_size")


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  from hh.data import tfds_io
  with cli.user_errors("hh.data.inspect"):
    kwargs = {}
    if f.dataset.startswith("hh_rlhf"):
      kwargs = {"source_dir": f.source_dir, "skip_bad": f.skip_bad}
    elif f.dataset.startswith("pmp"):
      kwargs = {"files": {"path": f.source_dir}}
    builder = tfds_io.build(f.dataset, f.data_dir, **kwargs)
    split = f.split or next(iter(builder.info.splits))
    tok = _tokenizer(f.tokenizer, tfds_io.source(builder, split), f.data_dir, f.vocab_size)
    print(report(builder, split, tok, f.seq_len, f.examples))


def define_flags():
  flags.DEFINE_string("dataset", "hh_rlhf/harmless-base", "name/config, e.g. pmp/stackexchange")
  flags.DEFINE_string("split", None, "Split (default: the first).")
  flags.DEFINE_string("source_dir", None, "hh-rlhf folder (official layout) or a PMP file.")
  flags.DEFINE_string("data_dir", os.path.expanduser("~/tensorflow_datasets"), "TFDS data dir.")
  flags.DEFINE_string("tokenizer", None, "SentencePiece model; default: train one on the split.")
  flags.DEFINE_integer("vocab_size", 2000, "Vocabulary of the tokenizer trained when none given.")
  flags.DEFINE_integer("seq_len", 1024, "PM sequence length (Askell et al. 2021, PMP: 1024).")
  flags.DEFINE_integer("examples", 2, "Decoded examples to print.")
  flags.DEFINE_bool("skip_bad", False, "Skip and count bad rows instead of failing.")


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, "hh.data.inspect"))
