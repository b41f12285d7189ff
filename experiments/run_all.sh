#!/usr/bin/env bash
# Every PM figure in turn (runs are shared and skipped when done): ~31 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
for f in fig7_pm_scaling probe_lm fig8_turns fig9_calibration fig25_threshold pmp_ablation fig19_mix; do
  python -m experiments.$f
done
