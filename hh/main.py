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


def run(config, workdir: str):
  """Runs ``config.stage`` in ``workdir`` (tests call this directly)."""
  import jax  # after flag parsing, so --xla flags and platform choices take effect

  from hh import multihost
  multihost.maybe_initialize()
  if jax.process_index() == 0:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, "config.json"), "w") as f:
      f.write(config.to_json_best_effort(indent=1))
  if config.stage == "lm":
    from hh.lm import train
    result = train.train_and_evaluate(config, workdir)
    if jax.process_index() == 0:
      print(f"validation loss {result['val_loss']:.3f} nats/token after {result['step']} steps; "
            f"unigram entropy of the tokenised text {result['unigram_entropy']:.3f} nats/token")
    return result
  if config.stage == "pm":
    from hh.pm import train as pm_train
    result = pm_train.train_and_evaluate(config, workdir)
    if jax.process_index() == 0:
      for spec, r in result["by_test_set"].items():
        extra = (f"; Bayes ceiling {r['bayes_ceiling']:.3f} → {r['fraction_of_ceiling']:.1%} of "
                 "it" if "bayes_ceiling" in r else "")
        print(f"{spec}: PM accuracy {r['accuracy']:.3f} on {r['pairs']} pairs; 'prefer the "
              f"shorter response' {r['shorter_response_baseline']:.3f}{extra}")
    return result
  if config.stage == "pipeline":
    from hh import pipeline
    results = pipeline.run(config, workdir)
    if jax.process_index() == 0:
      _print_pipeline(results, workdir)
    return results
  raise ValueError(f"config.stage={config.stage!r}; allowed: lm, pm, pipeline")


def _print_pipeline(results: dict, workdir: str):
  world = results.get("world")
  if world:
    c = world["ceilings"]
    print(f"world: tranches {world['tranches']}; Bayes ceiling helpful/test "
          f"{c['helpful/test']['bayes_ceiling']:.3f}, harmless/test "
          f"{c['harmless/test']['bayes_ceiling']:.3f}")
  lm = results.get("lm")
  if lm:
    print(f"lm: validation loss {lm['val_loss']:.3f} nats/token after {lm['step']} steps; "
          f"unigram entropy {lm['unigram_entropy']:.3f} nats/token")
  pm = results.get("pm")
  if pm:
    for spec, r in pm["by_test_set"].items():
      print(f"pm: {spec} accuracy {r['accuracy']:.3f} = {r['fraction_of_ceiling']:.1%} of the "
            f"Bayes ceiling {r['bayes_ceiling']:.3f}")
  if results.get("report"):
    print(f"report: {results['report']['path']}")


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
