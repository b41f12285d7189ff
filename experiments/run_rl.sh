#!/usr/bin/env bash
# The RL figure set, after the README's main command (runs/pipeline: the tiny base LM, π0, PM and
# PPO policy are reused; the tiny base is the main command's own world + LM). Runs are shared
# and skipped when done. Two lanes at a time on the 2 cores, as timed in the README; Fig. 1 runs
# its own online loops at every size (fig1_ladder.py), so its lane is as long as Fig. 4 + 14's.
set -euo pipefail
cd "$(dirname "$0")/.."
root="${HH_EXPERIMENTS:-runs/experiments}"
mkdir -p "$root"
[ -e "$root/base_tiny" ] || ln -s "$(realpath runs/pipeline)" "$root/base_tiny"
# the shared pieces first (one process per workdir): base LMs and π0 of every size
python -c "from experiments import common; [common.cd(s) for s in ('micro', 'mini', 'tiny')]"
(python -m experiments.fig4_robustness && python -m experiments.fig14_tension) &
lane=$!
python -m experiments.fig27_harmless_weight
python -m experiments.fig1_ladder
wait "$lane"
