"""Kill the pipeline with SIGKILL at random moments across its stages, rerun the same command
each time, and compare the outputs with an uninterrupted run (slow: not part of CI's test run;
CI's one-kill-per-kind-of-stage check is tests/test_kill.py).

  python tests/crash_resume.py                    # the main command's pipeline, 21 kills
  python tests/crash_resume.py --config=configs/pipeline.py:size=nano --root=runs/crash_nano

First the uninterrupted run (reused if its workdir is complete); its stage times set the kill
plan: ``--kills`` kills spread evenly over the seven stages in pipeline order, each at a uniform
random moment in [0, that stage's time / its number of kills + start-up] after the attempt is
seen in the stage. Each
attempt runs ``python -m hh.main --config=CONFIG --workdir=WORKDIR``; after the plan, the
command runs to the end. The outputs that later stages and users read — every result JSON,
metrics.jsonl (train and validation rows, wall-clock fields removed), every .npz, the JSONL
tranches, report.md, and every array (parameters, optimizer state) of each training loop's
latest checkpoint — must equal the uninterrupted run's exactly. Prints each kill (the
stage aimed at, the moment, where the run was: stage and latest checkpoints) and the comparison.
Both runs share a persistent XLA compilation cache (as a user's would), so a rerun's start-up
is seconds, not the compile time.
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
STAGES = ("world", "lm", "pm", "cd", "ppo", "policies", "report")


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


def stage_index(workdir: str) -> int:
  """The running stage's place in STAGES (len(STAGES) once the pipeline is done)."""
  at = where(workdir).split()[0] if os.path.isdir(workdir) else "world"
  return STAGES.index(at) if at in STAGES else len(STAGES)


def snapshot(workdir: str) -> int:
  """How many bytes the workdir holds (progress between attempts)."""
  return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(workdir) for f in fs)


def _strip(x):
  if isinstance(x, dict):
    return {k: _strip(v) for k, v in x.items() if k not in WALL_CLOCK}
  if isinstance(x, list):
    return [_strip(v) for v in x]
  return x


def checkpoint_arrays(path: str) -> dict[str, bytes]:
  """Every array of an orbax checkpoint item, read as host numpy whatever mesh wrote it."""
  import jax
  import orbax.checkpoint as ocp
  from absl import logging
  logging.set_verbosity(logging.ERROR)
  ckptr = ocp.PyTreeCheckpointer()
  meta = ckptr.metadata(path)
  tree = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
  args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
  state = ckptr.restore(path, restore_args=args)
  return {jax.tree_util.keystr(k): np.asarray(v).tobytes()
          for k, v in jax.tree_util.tree_leaves_with_path(state)}


def outputs(workdir: str) -> dict[str, object]:
  """relative path → comparable content of every output a later stage or a user reads (the
  workdir's own path, which results name, written as ``<workdir>``)."""
  root = os.path.abspath(workdir)
  out = {}
  for d, dirs, files in os.walk(workdir):
    if "checkpoints" in dirs:  # the latest checkpoint's arrays: parameters and optimizer state
      ckpt = os.path.join(d, "checkpoints")
      steps = sorted(int(s) for s in os.listdir(ckpt) if s.isdigit())
      if steps:
        rel = os.path.relpath(os.path.join(ckpt, str(steps[-1])), workdir)
        out[rel] = checkpoint_arrays(os.path.join(ckpt, str(steps[-1]), "state"))
    dirs[:] = [x for x in dirs if x not in ("checkpoints", "corrupt_checkpoints", "tb", "tfds")]
    for f in files:
      path = os.path.join(d, f)
      rel = os.path.relpath(path, workdir)
      if f.endswith(".json") and not f.endswith(".identity.json") and f != "config.json":
        with open(path) as fh:
          out[rel] = json.dumps(_strip(json.load(fh)), sort_keys=True).replace(root, "<workdir>")
      elif f.endswith(".jsonl"):
        with open(path) as fh:
          out[rel] = [json.dumps(_strip(json.loads(ln)), sort_keys=True).replace(root, "<workdir>")
                      for ln in fh if ln.strip()]
      elif f.endswith(".npz"):
        with np.load(path, allow_pickle=False) as z:
          out[rel] = {k: z[k].tobytes() for k in z.files}
      elif f == "report.md":
        with open(path) as fh:
          out[rel] = fh.read().replace(root, "<workdir>")
  return out


def stage_seconds(ref: str) -> dict[str, float]:
  """Each stage's wall time in the uninterrupted run, from the mtimes of its records (the run
  began when it wrote its first file: the stage identities)."""
  t = min(os.path.getmtime(os.path.join(d, f)) for d, _, fs in os.walk(ref) for f in fs)
  out = {}
  for stage in STAGES:
    end = os.path.getmtime(os.path.join(ref, "stages", f"{stage}.json"))
    out[stage], t = end - t, end
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--config", default="configs/pipeline.py:size=tiny")
  ap.add_argument("--kills", type=int, default=21, help="spread evenly over the stages")
  ap.add_argument("--startup_s", type=float, default=8.0,
                  help="added to a stage's time when drawing a kill moment within it")
  ap.add_argument("--root", default=os.path.join(REPO, "runs", "crash_resume"))
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("overrides", nargs="*", help="--config.x=y overrides for both runs")
  args = ap.parse_args()
  rng = random.Random(args.seed)
  ref, killed = os.path.join(args.root, "uninterrupted"), os.path.join(args.root, "killed")
  os.makedirs(args.root, exist_ok=True)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=os.path.join(args.root, "jax_cache"),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                    JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1")
  t0 = time.time()
  if not os.path.exists(os.path.join(ref, "stages", "report.json")):
    subprocess.run(command(args.config, ref, args.overrides), cwd=REPO, check=True)
  seconds = stage_seconds(ref)
  print(f"uninterrupted run: {time.time() - t0:.0f} s; stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items()), flush=True)
  # The kill plan: kills spread evenly over the stages in pipeline order; each at a uniform
  # random moment in [0, stage time / its kills + start-up] after the attempt is seen in that
  # stage, so a stage's kills fall across it (a kill aimed at a stage that has finished
  # meanwhile goes to the running one).
  plan = [STAGES[i * len(STAGES) // args.kills] for i in range(args.kills)]
  kills, attempts, t1 = [], 0, time.time()
  for target in plan + [None]:
    if target is not None and stage_index(killed) > STAGES.index(target):
      target = STAGES[min(stage_index(killed), len(STAGES) - 1)]  # finished already: the next
    before = snapshot(killed) if os.path.isdir(killed) else 0
    log = open(os.path.join(args.root, "attempt.log"), "w")  # a file: a pipe could fill up
    proc = subprocess.Popen(command(args.config, killed, args.overrides), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=log)
    attempts += 1
    if target is not None:
      delay = rng.uniform(0.0, seconds[target] / plan.count(target) + args.startup_s)
      while proc.poll() is None and stage_index(killed) < STAGES.index(target):
        time.sleep(0.1)
      try:
        proc.wait(timeout=delay)
      except subprocess.TimeoutExpired:
        at = where(killed)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
        landed = snapshot(killed) != before
        kills.append((target, round(delay, 1), at, landed))
        print(f"kill {len(kills):2d}: {delay:6.1f} s into {target}: was in {at}"
              f"{'' if landed else ' (nothing new written yet)'}", flush=True)
        continue
    log.close()
    if proc.returncode != 0:
      with open(log.name) as fh:
        sys.exit(f"attempt {attempts} failed (exit {proc.returncode}):\n{fh.read()[-3000:]}")
    if os.path.exists(os.path.join(killed, "stages", "report.json")):
      break
  a, b = outputs(ref), outputs(killed)
  differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
  landed = sum(k[3] for k in kills)
  print(f"{len(kills)} kills ({landed} after something new was written) in {attempts} attempts, "
        f"{time.time() - t1:.0f} s; compared {len(a)} output files: "
        f"{'all identical' if not differ else 'DIFFER: ' + ', '.join(differ)}")
  sys.exit(1 if differ else 0)


if __name__ == "__main__":
  main()
