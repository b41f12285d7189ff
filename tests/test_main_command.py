"""The README's main command prints the lines the README shows (slow: ~20 minutes; not in CI).

  python -m pytest -q -m slow tests/test_main_command.py

The README's lines were made on one machine with the versions of constraints.txt; on another
CPU or with other versions the floating-point summation order differs and so may the digits
(README, "What the same numbers means"): this checks the claim where it is made.
"""
import os
import re
import subprocess
import sys

import pytest

from conftest import REPO


def readme_lines() -> list[str]:
  text = (REPO / "README.md").read_text(encoding="utf-8")
  block = re.search(r"It ends with \(seed 0\):\n\n```\n(.*?)```", text, re.S).group(1)
  return [line for line in block.splitlines() if line and not line.startswith("report:")]


def test_the_readme_block_is_found():
  lines = readme_lines()
  assert lines[0].startswith("world:") and any(x.startswith("ppo:") for x in lines)


@pytest.mark.slow
def test_the_main_command_prints_the_readme_lines(tmp_path):
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the command's own devices
  proc = subprocess.run([sys.executable, "-m", "hh.main", "--config=configs/pipeline.py:size=tiny",
                         f"--workdir={tmp_path / 'pipeline'}", "--config.progress=False"],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  printed = [x for x in proc.stdout.splitlines() if x and not x.startswith("report:")]
  assert printed == readme_lines()
