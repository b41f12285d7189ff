#!/usr/bin/env bash
# The RL figure set (runs are shared and skipped when done), after the README's main command
# (runs/pipeline: the tiny base LM, π0, PM and PPO policy) and, for Fig. 1's online points,
# fig15_online.py and fig35_helpful_only.py. The tiny base is the main command's own world + LM.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${HH_EXPERIMENTS:-runs/experiments}"
mkdir -p "$root"
[ -e "$root/base_tiny" ] || ln -s "$(realpath runs/pipeline)" "$root/base_tiny"
for f in fig4_robustness fig14_tension fig27_harmless_weight fig1_ladder; do
  python -m experiments.$f
done
