"""``python -m hh.ood fit|score``: an OOD detector on an LM's activations (Bai et al. 2022, §5.4).

  python -m hh.ood fit --lm=runs/pipeline/lm --prompts=helpful.jsonl --workdir=runs/ood \
      [--ood=harmful.jsonl] [--layer=middle|best|ℓ] [--pool=last|mean] \
      [--method=srmd|mahalanobis|exposure --exposure=ten_harmful.jsonl] [--fpr=0.05]
  python -m hh.ood score --workdir=runs/ood --prompts=new.jsonl --output=scored.jsonl

Prompt files are JSON lines with a string ``prompt`` (e.g. ``"\\n\\nHuman: ..."``); the scored
output repeats each row with ``ood_score`` and ``ood_flag`` (score above the threshold set at
``--fpr`` on held-out in-distribution prompts).
"""
from __future__ import annotations

import json
import sys

from absl import app, flags, logging

from hh import cli

COMMANDS = ("fit", "score")


def _prompts(path: str | None) -> list[str]:
  from hh import io
  return [r["prompt"] for r in io.read_jsonl(path, {"prompt": str})] if path else []


def main(argv):
  logging.set_verbosity(logging.WARNING)
  f = flags.FLAGS
  with cli.user_errors("hh.ood"):
    if len(argv) != 2 or argv[1] not in COMMANDS:
      raise ValueError(f"expected one command, {' or '.join(COMMANDS)} (got {argv[1:]})")
    from hh import io
    from hh.ood import detector
    if not f.prompts:
      raise ValueError("--prompts: a JSON-lines file of {\"prompt\": ...} rows is required")
    if argv[1] == "fit":
      if not f.lm:
        raise ValueError("--lm: the LM workdir to take activations from is required")
      meta = detector.fit(f.lm, _prompts(f.prompts), f.workdir, layer=f.layer, pool=f.pool,
                          method=f.method, exposure=_prompts(f.exposure), ood=_prompts(f.ood),
                          ridge=f.ridge, fpr=f.fpr, holdout=f.holdout, seed=f.seed)
      print(json.dumps(meta))
      return
    rows = io.read_jsonl(f.prompts, {"prompt": str})
    scores, flagged = detector.score(f.workdir, [r["prompt"] for r in rows])
    lines = "".join(json.dumps({**r, "ood_score": float(s), "ood_flag": bool(b)}) + "\n"
                    for r, s, b in zip(rows, scores, flagged))
    if f.output:
      io.write_text(f.output, lines)
    else:
      sys.stdout.write(lines)


def define_flags():
  flags.DEFINE_string("workdir", None, "Where the detector is saved (fit) or read (score).")
  flags.DEFINE_string("prompts", None, "JSON lines with 'prompt': in-distribution (fit) or to "
                      "score (score).")
  flags.DEFINE_string("lm", None, "fit: the LM workdir whose activations are used.")
  flags.DEFINE_string("ood", None, "fit: OOD prompts to report AUROC on (and pick --layer=best).")
  flags.DEFINE_string("exposure", None, "fit: harmful example prompts for --method=exposure.")
  flags.DEFINE_string("layer", "middle", "fit: 'middle', 'best' or 0 … L (0 = embeddings).")
  flags.DEFINE_enum("pool", "last", ["last", "mean"], "fit: pooling over the prompt's tokens.")
  flags.DEFINE_enum("method", "srmd", ["srmd", "mahalanobis", "exposure"], "fit: the detector.")
  flags.DEFINE_float("ridge", 0.0, "fit: ridge × mean variance added to Σ's diagonal.")
  flags.DEFINE_float("fpr", 0.05, "fit: false-positive rate of the flag on held-out prompts.")
  flags.DEFINE_float("holdout", 0.2, "fit: fraction of in-distribution prompts held out.")
  flags.DEFINE_integer("seed", 0, "fit: the hold-out split's seed.")
  flags.DEFINE_string("output", None, "score: where to write the scored lines (default stdout).")
  flags.mark_flags_as_required(["workdir", "prompts"])


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, "hh.ood"))
