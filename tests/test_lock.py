"""One job per workdir: a second process is refused with a message naming the holder, and a
killed holder leaves no stale lock."""
import os
import signal
import subprocess
import sys

import pytest

from hh import io

HOLD = ("import sys, time; from hh import io\n"
        "with io.workdir_lock(sys.argv[1]):\n"
        "  print('held', flush=True); time.sleep(600)\n")


def _holder(workdir):
  proc = subprocess.Popen([sys.executable, "-c", HOLD, str(workdir)], stdout=subprocess.PIPE,
                          text=True, cwd=os.path.dirname(os.path.dirname(__file__)))
  assert proc.stdout.readline().strip() == "held"
  return proc


def test_a_second_process_is_refused_and_a_killed_holder_frees_the_workdir(tmp_path):
  from configs import lm
  from hh import main as hh_main
  proc = _holder(tmp_path)
  try:
    with pytest.raises(ValueError, match=rf"{tmp_path}: in use by another hh process \(pid "
                                         rf"{proc.pid} on .*\); wait for it"):
      with io.workdir_lock(str(tmp_path)):
        pass
    with pytest.raises(ValueError, match="in use by another hh process"):
      hh_main.run(lm.get_config("size=nano"), str(tmp_path))    # refused before any work
    assert sorted(os.listdir(tmp_path)) == [".hh.lock"]
  finally:
    proc.send_signal(signal.SIGKILL)
    proc.wait()
  with io.workdir_lock(str(tmp_path)):                          # no stale lock after SIGKILL
    with io.workdir_lock(str(tmp_path)):                        # re-entrant in one process
      pass


def test_a_metrics_line_torn_by_a_kill_is_dropped_and_a_torn_middle_line_is_named(tmp_path):
  import pytest

  from hh.train import metrics
  good = '{"step": 1, "split": "train", "loss": 1.0}\n'
  (tmp_path / "metrics.jsonl").write_text(good + '{"step": 2, "spl')
  assert [r["step"] for r in metrics.read(str(tmp_path))] == [1]
  (tmp_path / "metrics.jsonl").write_text('{"step": 2, "spl\n' + good)
  with pytest.raises(ValueError, match=r"metrics\.jsonl:1: not a JSON line"):
    metrics.read(str(tmp_path))
