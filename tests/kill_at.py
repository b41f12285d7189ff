"""Runs the small test pipeline of tests/test_sim.py (every stage) in a fresh process and kills it
with SIGKILL at one chosen moment: the N-th call of MODULE:FUNCTION while STAGE is the running
stage, just before or just after the call (for tests/test_kill.py).

  python tests/kill_at.py WORKDIR TOKENIZER                                    # run to the end
  python tests/kill_at.py WORKDIR TOKENIZER STAGE MODULE:FUNCTION N before|after
  python tests/kill_at.py --online=PIPELINE [--labels=people] WORKDIR TOKENIZER [STAGE MODULE:FUNCTION N WHEN]

The running stage is the first of the pipeline without a ``stages/<name>.json`` record, as
``tests/crash_resume.py`` reads it; inside the online loop (``--online``: tests/test_sim.py's
small_online_config on the finished pipeline in PIPELINE) it is the loop's step, e.g.
``online/iter_2/pm`` (hh/online/loop.py: tranche, pm, ppo per iteration, then evaluation). The process prints ``killing: ...`` to stderr and dies
without any clean-up: no ``finally`` blocks, no atexit handlers, orbax writes left in flight.
"""
from __future__ import annotations

import importlib
import os
import signal
import sys

TESTS = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(TESTS), TESTS]


def running_stage(workdir: str, names, iterations: int = 0) -> str | None:
  """The first stage without a record; for the online loop (``iterations`` > 0) its first
  unfinished step, ``online/iter_<i>/<step>`` or ``online/evaluation``."""
  stage = next((n for n in names
                if not os.path.exists(os.path.join(workdir, "stages", f"{n}.json"))), None)
  if stage != "online" or not iterations:
    return stage
  from hh.online import loop as online
  steps = [f"iter_{i}/{s}" for i in range(1, iterations + 1) for s in online.STEPS]
  for step in steps + ["evaluation"]:
    d, _, name = f"online/{step}".rpartition("/")
    if not os.path.exists(os.path.join(workdir, d, "stages", f"{name}.json")):
      return f"online/{step}"
  return "online"


def arm(workdir: str, names, stage: str, target: str, n: int, when: str, iterations: int = 0):
  module_name, name = target.split(":")
  module = importlib.import_module(module_name)
  original, calls = getattr(module, name), [0]

  def die():
    sys.stderr.write(f"killing: {when} call {n} of {target} in stage {stage}\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)

  def wrapped(*args, **kwargs):
    if running_stage(workdir, names, iterations) != stage:
      return original(*args, **kwargs)
    calls[0] += 1
    if calls[0] == n and when == "before":
      die()
    out = original(*args, **kwargs)
    if calls[0] == n:
      die()
    return out

  setattr(module, name, wrapped)


def main(argv):
  opts = dict(a[2:].split("=", 1) for a in argv if a.startswith("--"))
  workdir, tokenizer_path, *kill = [a for a in argv if not a.startswith("--")]
  online = opts.get("online")
  import test_sim

  from hh import main as hh_main
  config = (test_sim.small_online_config(tokenizer_path, online) if online
            else test_sim.small_pipeline_config(tokenizer_path, all_stages=True))
  if "labels" in opts:
    config.online.labels = opts["labels"]
  if kill:
    stage, target, n, when = kill
    assert when in ("before", "after"), when
    arm(workdir, config.stages, stage, target, int(n), when,
        config.online.iterations if online else 0)
  hh_main.run_or_stop(config, workdir)


if __name__ == "__main__":
  main(sys.argv[1:])
