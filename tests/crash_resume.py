"""Kill the pipeline with SIGKILL at random moments, rerun the same command each time, and compare
the outputs with an uninterrupted run (slow: not part of CI's test run).

  python tests/crash_resume.py --kills=20                          # the main command's pipeline
  python tests/crash_resume.py --kills=20 --config=configs/pipeline.py:size=nano   # ~4× faster

Each attempt runs ``python -m hh.main --config=CONFIG --workdir=WORKDIR`` and is killed after a
uniform random 4–MAX seconds (the first seconds are start-up; a kill must land in real work to
count, so attempts that were killed before anything new was written are not counted) until
``--kills`` kills have landed; then the command runs to the end. The outputs that later stages
and users read — every result JSON, metrics.jsonl (train and validation rows, wall-clock fields
removed), every .npz, the JSONL tranches and report.md — must equal the uninterrupted run's
exactly. Prints each kill point (seconds, the stage that was running and its latest checkpoint).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALL_CLOCK = {"time", "steps_per_sec", "tokens_per_sec", "seconds", "elapsed_s", "wall_s"}
STAGES = ("world", "lm", "pm", "cd", "policies", "ppo", "report")


def command(config: str, workdir: str, overrides) -> list[str]:
  return [sys.executable, "-m", "hh.main", f"--config={config}", f"--workdir={workdir}",
          "--config.progress=False", *overrides]


def where(workdir: str) -> str:
  """The first unfinished stage and its latest checkpoint step."""
  done = set(os.listdir(os.path.join(workdir, "stages"))) if os.path.isdir(
      os.path.join(workdir, "stages")) else set()
  for stage in STAGES:
    if f"{stage}.json" not in done:
      ckpt = os.path.join(workdir, stage, "checkpoints")
      if stage == "pm":
        ckpt = next((os.path.join(workdir, "pm", p, "checkpoints") for p in ("finetune", "pmp")
                     if os.path.isdir(os.path.join(workdir, "pm", p, "checkpoints"))), ckpt)
      steps = sorted(int(s) for s in os.listdir(ckpt) if s.isdigit()) if os.path.isdir(ckpt) \
          else []
      return f"{stage} (checkpoints {steps[-2:] if steps else 'none'})"
  return "done"


def snapshot(workdir: str) -> int:
  """How many bytes the workdir holds (progress between attempts)."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(workdir) for f in fs)


def _strip(x):
  if isinstance(x, dict):
    return {k: _strip(v) for k, v in x.items() if k not in WALL_CLOCK}
  if isinstance(x, list):
    return [_strip(v) for v in x]
  return x


def outputs(workdir: str) -> dict[str, object]:
  """relative path → comparable content of every output a later stage or a user reads."""
  out = {}
  for d, dirs, files in os.walk(workdir):
    dirs[:] = [x for x in dirs if x not in ("checkpoints", "corrupt_checkpoints", "tb", "tfds")]
    for f in files:
      path = os.path.join(d, f)
      rel = os.path.relpath(path, workdir)
      if f.endswith(".json") and not f.endswith(".identity.json") and f != "config.json":
        with open(path) as fh:
          out[rel] = json.dumps(_strip(json.load(fh)), sort_keys=True)
      elif f.endswith(".jsonl"):
        with open(path) as fh:
          out[rel] = [json.dumps(_strip(json.loads(ln)), sort_keys=True) for ln in fh if ln.strip()]
      elif f.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
          out[rel] = {k: z[k].tobytes() for k in z.files}
      elif f == "report.md":
        with open(path) as fh:
          out[rel] = fh.read()
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default="configs/pipeline.py:size=tiny")
  ap.add_argument("--kills", type=int, default=20)
  ap.add_argument("--max_s", type=float, default=60.0, help="latest kill time per attempt")
  ap.add_argument("--root", default=os.path.join(REPO, "runs", "crash_resume"))
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("overrides", nargs="*", help="--config.x=y overrides for both runs")
  args = ap.parse_args()
  rng = random.Random(args.seed)
  ref, killed = os.path.join(args.root, "uninterrupted"), os.path.join(args.root, "killed")
  os.makedirs(args.root, exist_ok=True)
  t0 = time.time()
  if not os.path.exists(os.path.join(ref, "stages", "report.json")):
    subprocess.run(command(args.config, ref, args.overrides), cwd=REPO, check=True)
  print(f"uninterrupted run: {time.time() - t0:.0f} s", flush=True)
  kills, attempts = [], 0
  while True:
    before = snapshot(killed) if os.path.isdir(killed) else 0
    log = open(os.path.join(args.root, "attempt.log"), "w")  # a file: a pipe could fill up
    proc = subprocess.Popen(command(args.config, killed, args.overrides), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=log)
    attempts += 1
    if len(kills) < args.kills:
      t = rng.uniform(4.0, args.max_s)
      try:
        proc.wait(timeout=t)
      except subprocess.TimeoutExpired:
        at = where(killed)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
        if snapshot(killed) != before:  # it got past start-up and wrote something
          kills.append((round(t, 1), at))
          print(f"kill {len(kills):2d}: after {t:5.1f} s in {at}", flush=True)
        continue
    else:
      proc.wait()
    log.close()
    if proc.returncode != 0:
      with open(log.name) as fh:
        sys.exit(f"attempt {attempts} failed (exit {proc.returncode}):\n{fh.read()[-3000:]}")
    if os.path.exists(os.path.join(killed, "stages", "report.json")):
      break
  a, b = outputs(ref), outputs(killed)
  differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
  print(f"{len(kills)} kills in {attempts} attempts; compared {len(a)} output files: "
        f"{'all identical' if not differ else 'DIFFER: ' + ', '.join(differ)}")
  sys.exit(1 if differ else 0)


if __name__ == "__main__":
  main()
