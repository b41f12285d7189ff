"""Entry point: ``python -m hh.main --config=configs/lm.py:size=tiny --workdir=DIR``.

Parses flags, saves the resolved config in the workdir and runs the stage the config names
(one registry: hh/stages.py; one runner: hh/pipeline.py, where ``pipeline`` runs
``config.stages`` in order).
Errors in the user's input (config keys, sizes, meshes, paths) end with one line saying what was
wrong and what is allowed.
"""
from __future__ import annotations

import contextlib
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from hh import cli


def run(config, workdir: str):
  """Runs ``config.stage`` (a registered stage, or ``pipeline``) in ``workdir`` (tests call this
  directly); prints its summary lines and returns its result. A run that fails before its stage
  did any work leaves nothing in a workdir it created."""
  import jax  # after flag parsing, so --xla flags and platform choices take effect

  from hh import io, multihost, pipeline, stages
  if config.stage != pipeline.PIPELINE:
    stages.get(config.stage)
  multihost.maybe_initialize(config.get("distributed", "auto"))
  io.check(workdir)  # a gs:// (s3://, az://) workdir needs its filesystem package
  created = not io.exists(workdir)
  try:
    # One job per workdir: process 0 holds the lock (the other hosts of a job share its workdir).
    lock = io.workdir_lock(workdir) if jax.process_index() == 0 else contextlib.nullcontext()
    with lock:
      result, lines = pipeline.run_config(config, workdir)
  except BaseException:
    if created and jax.process_index() == 0:
      io.remove_if_only_bookkeeping(workdir)
    raise
  if jax.process_index() == 0:
    print("\n".join(lines))
  return result


def run_or_stop(config, workdir: str):
  """``run``, as a program: a preempted run (preemption.EXIT_CODE) or one that waits for
  judgements from people (workdir.WAIT_EXIT_CODE) ends with one line and its exit code."""
  from hh import preemption
  from hh import workdir as wd
  try:
    run(config, workdir)
  except (preemption.Preempted, wd.Waiting) as e:
    print(f"hh: {e}", file=sys.stderr, flush=True)
    sys.exit(preemption.EXIT_CODE if isinstance(e, preemption.Preempted) else wd.WAIT_EXIT_CODE)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.WARNING)
  from hh import preemption
  preemption.install()  # SIGTERM: checkpoint at the next step, exit with preemption.EXIT_CODE
  with cli.user_errors("hh"):
    run_or_stop(flags.FLAGS.config, flags.FLAGS.workdir)


def define_flags():
  """Flags are defined only when run as a program, so tests can import every entry point."""
  config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/lm.py:size=tiny",
                                  lock_config=True)
  flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and outputs.")
  flags.mark_flags_as_required(["config", "workdir"])


if __name__ == "__main__":
  define_flags()
  app.run(main, flags_parser=lambda argv: cli.parse_flags(argv, "hh"))
