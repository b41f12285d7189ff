#!/usr/bin/env bash
# One prepared run on one GPU, both sides minutes apart: hh's bf16 LM and PM train steps of the
# 810M and 2.7B shapes without remat (MFU against the bf16 matmul peak with float32 accumulation,
# measured there), bf16 decoding at 810M (fraction of the memory bandwidth measured there), one
# PPO iteration at 810M (policy, π0, value and PM on the GPU; generation / scoring / training), then
# the PyTorch side of the same workloads when HH_GPU_BASELINE names its script (eager PyTorch +
# transformers, one JSON line per workload: `python3 $HH_GPU_BASELINE pm gen lm`), and each ratio.
#   HH_GPU_BASELINE=/path/to/baseline_gpu.py bash benchmarks/gpu.sh [steps|generate|ppo|all]
# Logs and the JSON lines under $OUT (or /tmp/hh_gpu). Sized to fit 10 minutes of GPU time,
# compilation included (each run has its own time limit).
set -uo pipefail
OUT=${OUT:-/tmp/hh_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
run() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $?" >> "$OUT/summary.txt"
  tail -n 3 "$OUT/$name.log" | tee -a "$OUT/summary.txt"
}
what=${1:-all}
if [ "$what" = steps ] || [ "$what" = all ]; then
run lm_810M 100 python3 benchmarks/lm_step.py --size=810M --dtype=bfloat16 --batch=8 --seq=2048 --remat=none
run pm_810M 90 python3 benchmarks/pm_step.py --size=810M --dtype=bfloat16 --pairs=16 --seq=1024 --remat=none
run lm_2.7B 120 python3 benchmarks/lm_step.py --size=2.7B --dtype=bfloat16 --batch=8 --seq=2048 --remat=none
run pm_2.7B 100 python3 benchmarks/pm_step.py --size=2.7B --dtype=bfloat16 --pairs=8 --seq=1024 --remat=none
fi
if [ "$what" = generate ] || [ "$what" = all ]; then
run gen_810M 100 python3 benchmarks/generate.py --size=810M --dtype=bfloat16 --batch=64 --prompt=128 --new=128
fi
if [ "$what" = ppo ] || [ "$what" = all ]; then
run ppo_810M 120 python3 benchmarks/ppo_step.py --size=810M --dtype=bfloat16 --iters=2
fi
if [ -n "${HH_GPU_BASELINE:-}" ]; then
run torch_810M 150 python3 "$HH_GPU_BASELINE" pm gen lm
PEER_SIZE=2.7B run torch_2.7B 100 python3 "$HH_GPU_BASELINE" pm
fi
# hh / PyTorch for each workload both sides ran (the last JSON line of each log)
python3 - "$OUT" <<'EOF'
import glob, json, os, sys
out = sys.argv[1]
def lines(name):
  rows = []
  for path in glob.glob(os.path.join(out, f"{name}.log")):
    rows += [json.loads(x) for x in open(path) if x.startswith("{")]
  return rows
def torch_part(log, prefix):  # the baseline's JSON lines name their workload in "part"
  return next((r for r in lines(log) if str(r.get("part", "")).startswith(prefix)), None)
for hh_name, key, log, prefix in (("pm_810M", "tokens_per_s", "torch_810M", "pm"),
                                  ("lm_810M", "tokens_per_s", "torch_810M", "lm"),
                                  ("gen_810M", "gen_tokens_per_s", "torch_810M", "gen"),
                                  ("pm_2.7B", "tokens_per_s", "torch_2.7B", "pm")):
  hh, t = lines(hh_name), torch_part(log, prefix)
  if hh and t and key in hh[-1]:
    a, b = hh[-1][key], t.get("tokens_per_s", t.get("gen_tokens_per_s"))
    print(f"{hh_name}: hh {a:,.0f} | PyTorch {b:,.0f} | hh / PyTorch {a / b:.2f}x  (MFU hh "
          f"{hh[-1].get('mfu', float('nan')):.1%}, PyTorch {t.get('mfu', float('nan')):.1%})")
  elif hh:
    print(f"{hh_name}: hh {hh[-1].get(key)} (no PyTorch figure)")
EOF
