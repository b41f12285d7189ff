"""hh against a PyTorch baseline, side by side: alternate runs in one sitting, ratio with both peaks.

  python benchmarks/compare.py --baseline=PATH            # W1: hh's PM step vs TRL's RewardTrainer
  python benchmarks/compare.py --baseline=PATH --workload W2   # hh's sampler vs HF generate
  python benchmarks/compare.py --baseline=PATH --workload W3   # a PPO iteration vs TRL's
  python benchmarks/compare.py --baseline=PATH -- --dtype=bfloat16 --unroll=4   # hh's options

``--baseline`` (or ``HH_BASELINE``): a script run as ``bash PATH W1|W2`` that runs the same
workload in PyTorch + transformers (+ TRL) and ends with one JSON line of the same keys
(``tokens_per_s``, ``gen_tokens_per_s`` or ``iter_s_median``, ``peak_matmul_gflops_before``,
``peak_matmul_gflops``). The ratio is hh's speed over the baseline's: for W3, the baseline's
seconds per iteration over hh's.

The machine's speed drifts by 2–3× between days, and JAX's and PyTorch's matmuls do not drift
alike, so a ratio is only meaningful when both sides run in the same minutes: this runs hh, then
the baseline, then hh, then the baseline (``--rounds``), prints every run's tokens/s and measured matmul
peak, each round's ratio and the median. docs/benchmarks.md quotes the output of such runs.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# workload → (hh's command, the JSON key both sides print for the figure, its unit)
HH = {"W1": ([sys.executable, os.path.join(REPO, "benchmarks", "pm_step.py")], "tokens_per_s",
             "tokens/s"),
      "W2": ([sys.executable, os.path.join(REPO, "benchmarks", "generate.py")],
             "gen_tokens_per_s", "tokens/s"),
      "W3": ([sys.executable, os.path.join(REPO, "benchmarks", "ppo_step.py")], "iter_s_median",
             "s/iteration")}


def speed_ratio(key: str, hh: float, base: float) -> float:
  """hh's speed over the baseline's: a rate's quotient, or a time's inverse quotient."""
  return base / hh if key.endswith("_s_median") else hh / base


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
  ap.add_argument("--baseline", default=os.environ.get("HH_BASELINE"),
                  help="the PyTorch side: a script run as `bash PATH WORKLOAD`")
  ap.add_argument("hh_args", nargs="*", help="passed to hh's benchmark (after --), e.g. "
                  "-- --dtype=bfloat16 --unroll=4")
  args = ap.parse_args()
  if not args.baseline or not os.path.exists(args.baseline):
    sys.exit(f"compare: --baseline={args.baseline!r}: no such script (the PyTorch side, run as "
             "`bash PATH WORKLOAD`; or set HH_BASELINE)")
  ratios = []
  cmd, key, unit = HH[args.workload]
  cmd = cmd + args.hh_args
  for i in range(args.rounds):
    hh = run(cmd)
    base = run(["bash", args.baseline, args.workload])
    ratio = speed_ratio(key, hh[key], base[key])
    ratios.append(ratio)
    print(f"round {i + 1}: hh {hh[key]:,.2f} {unit} (JAX peak "
          f"{hh['peak_matmul_gflops']:,.1f} GFLOP/s)  |  PyTorch {base[key]:,.2f} "
          f"{unit} (torch peak {base['peak_matmul_gflops_before']:,.1f} → "
          f"{base['peak_matmul_gflops']:,.1f})  |  ratio {ratio:.2f}×", flush=True)
  print(f"{args.workload}: hh / PyTorch = {statistics.median(ratios):.2f}× (median of "
        f"{', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
  main()
