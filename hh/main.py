"""Entry point: ``python -m hh.main --config=configs/lm.py:size=tiny --workdir=DIR``.

Parses flags, saves the resolved config in the workdir and runs the stage the config names.
Errors in the user's input (config keys, sizes, meshes, paths) end with one line saying what was
wrong and what is allowed.
"""
from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

from hh import cli


def _run_lm(config, workdir):
  from hh.lm import train
  return train.train_and_evaluate(config, workdir)


def _run_pm(config, workdir):
  from hh.pm import train
  return train.train_and_evaluate(config, workdir)


def _run_pipeline(config, workdir):
  from hh import pipeline
  return pipeline.run(config, workdir)


def summary_lines(stage: str, result: dict) -> list[str]:
  """What a finished stage prints (the pipeline prints each of its stages')."""
  if stage == "world":
    c = result["ceilings"]
    return [f"world: tranches {result['tranches']}; Bayes ceiling helpful/test "
            f"{c['helpful/test']['bayes_ceiling']:.3f}, harmless/test "
            f"{c['harmless/test']['bayes_ceiling']:.3f}"]
  if stage == "lm":
    return [f"lm: validation loss {result['val_loss']:.3f} nats/token after {result['step']} "
            f"steps; unigram entropy of the tokenised text {result['unigram_entropy']:.3f} "
            "nats/token"]
  if stage == "pm":
    lines = []
    for spec, r in result["by_test_set"].items():
      extra = (f"; {r['fraction_of_ceiling']:.1%} of the Bayes ceiling {r['bayes_ceiling']:.3f}"
               if "bayes_ceiling" in r else "")
      lines.append(f"pm: {spec} accuracy {r['accuracy']:.3f} on {r['pairs']} pairs; 'prefer "
                   f"the shorter response' {r['shorter_response_baseline']:.3f}{extra}")
    return lines
  if stage == "report":
    return [f"report: {result['path']}"]
  if stage == "pipeline":
    return [line for name, r in result.items() for line in summary_lines(name, r)]
  return []


STAGES = {"lm": _run_lm, "pm": _run_pm, "pipeline": _run_pipeline}


def run(config, workdir: str):
  """Runs ``config.stage`` in ``workdir`` (tests call this directly); returns its result."""
  import jax  # after flag parsing, so --xla flags and platform choices take effect

  from hh import multihost
  if config.stage not in STAGES:
    raise ValueError(f"config.stage={config.stage!r}; allowed: {', '.join(STAGES)}")
  multihost.maybe_initialize()
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))
  result = STAGES[config.stage](config, workdir)
  if jax.process_index() == 0:
    print("\n".join(summary_lines(config.stage, result)))
  return result


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  with cli.user_errors("hh"):
    run(flags.FLAGS.config, flags.FLAGS.workdir)


def define_flags():
  """Flags are defined only when run as a program, so tests can import every entry point."""
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/lm.py:size=tiny",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and outputs.")
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, "hh"))
