"""hh against the peers' stack, side by side: alternate runs in one sitting, ratio with both peaks.

  bash ../shared/peer/setup.sh            # once: the peers' venv (PyTorch + transformers + TRL)
  python benchmarks/compare.py            # W1: hh's PM step vs TRL's RewardTrainer, 2 rounds
  python benchmarks/compare.py --workload W2   # hh's sampler vs HF generate
  python benchmarks/compare.py -- --dtype=bfloat16 --unroll=4   # options for hh's side

The machine's speed drifts by 2–3× between days, and JAX's and PyTorch's matmuls do not drift
alike, so a ratio is only meaningful when both sides run in the same minutes: this runs hh, then
the peer, then hh, then the peer (``--rounds``), prints every run's tokens/s and measured matmul
peak, each round's ratio and the median. The README quotes the output of such a run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = os.path.join(os.path.dirname(REPO), "shared", "peer", "run.sh")
# workload → (hh's command, the JSON key both sides print for the figure)
HH = {"W1": ([sys.executable, os.path.join(REPO, "benchmarks", "pm_step.py")], "tokens_per_s"),
      "W2": ([sys.executable, os.path.join(REPO, "benchmarks", "generate.py")],
             "gen_tokens_per_s")}


def last_json(out: str) -> dict:
  lines = [line for line in out.strip().splitlines() if line.startswith("{")]
  if not lines:
    raise RuntimeError(f"no JSON line in the output:\n{out[-2000:]}")
  return json.loads(lines[-1])


def run(cmd: list[str]) -> dict:
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
  if proc.returncode:
    raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
  return last_json(proc.stdout)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workload", default="W1", choices=sorted(HH))
  ap.add_argument("--rounds", type=int, default=2)
  ap.add_argument("hh_args", nargs="*", help="passed to hh's benchmark (after --), e.g. "
                  "-- --dtype=bfloat16 --unroll=4")
  args = ap.parse_args()
  if not os.path.exists(PEER):
    sys.exit(f"compare: {PEER} not found (the peers' benchmarks sit in ../shared/peer)")
  ratios = []
  cmd, key = HH[args.workload]
  cmd = cmd + args.hh_args
  for i in range(args.rounds):
    hh = run(cmd)
    peer = run(["bash", PEER, args.workload])
    ratio = hh[key] / peer[key]
    ratios.append(ratio)
    print(f"round {i + 1}: hh {hh[key]:,.0f} tokens/s (JAX peak "
          f"{hh['peak_matmul_gflops']:,.1f} GFLOP/s)  |  peer {peer[key]:,.0f} "
          f"tokens/s (torch peak {peer['peak_matmul_gflops_before']:,.1f} → "
          f"{peer['peak_matmul_gflops']:,.1f})  |  ratio {ratio:.2f}×", flush=True)
  print(f"{args.workload}: hh / peer = {statistics.median(ratios):.2f}× (median of "
        f"{', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
  main()
