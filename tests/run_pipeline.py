"""Runs the pipeline config a test module builds, in a fresh process (at XLA's default
optimisation: tests/conftest.py's ``pipeline_env``), for fixtures that train for minutes.

  python tests/run_pipeline.py MODULE:FUNCTION WORKDIR    # e.g. test_world_pm:world_pm_config

The stage results are in ``WORKDIR/stages/<name>.json``.
"""
from __future__ import annotations

import importlib
import os
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]


def main(argv):
  target, workdir = argv
  module, name = target.split(":")
  config = getattr(importlib.import_module(module), name)()
  from hh import main as hh_main
  hh_main.run(config, workdir)


if __name__ == "__main__":
  main(sys.argv[1:])
