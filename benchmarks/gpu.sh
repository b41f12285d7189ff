#!/usr/bin/env bash
# One prepared run on a lent GPU: bf16 LM and PM train steps of the 810M and 2.7B shapes (MFU
# against the bf16 matmul peak measured there), and bf16 decoding of the same shapes (fraction of
# the memory bandwidth measured there).
#   bash benchmarks/gpu.sh [steps|generate|all]     # logs under $OUT (or /tmp/hh_gpu)
set -uo pipefail
OUT=${OUT:-/tmp/hh_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=0.92
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"
python3 -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, \
'optax', optax.__version__, jax.devices())" | tee -a "$OUT/gpu.txt"
run() {  # name, seconds, script args...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" | tee -a "$OUT/summary.txt"
  timeout "$limit" python3 "$@" > "$OUT/$name.log" 2>&1
  echo "   exit $?" >> "$OUT/summary.txt"
  tail -n 3 "$OUT/$name.log" | tee -a "$OUT/summary.txt"
}
what=${1:-all}
if [ "$what" = steps ] || [ "$what" = all ]; then
run lm_810M_none 120 benchmarks/lm_step.py --size=810M --dtype=bfloat16 --batch=8 --seq=2048 --remat=none
run lm_810M_full 120 benchmarks/lm_step.py --size=810M --dtype=bfloat16 --batch=8 --seq=2048 --remat=full
run pm_810M_none 100 benchmarks/pm_step.py --size=810M --dtype=bfloat16 --pairs=16 --seq=1024 --remat=none
run lm_2.7B_full 150 benchmarks/lm_step.py --size=2.7B --dtype=bfloat16 --batch=8 --seq=2048 --remat=full
run pm_2.7B_full 120 benchmarks/pm_step.py --size=2.7B --dtype=bfloat16 --pairs=8 --seq=1024 --remat=full
fi
if [ "$what" = generate ] || [ "$what" = all ]; then
run gen_810M_b64 150 benchmarks/generate.py --size=810M --dtype=bfloat16 --batch=64 --prompt=128 --new=128
run gen_2.7B_b64 150 benchmarks/generate.py --size=2.7B --dtype=bfloat16 --batch=64 --prompt=128 --new=128
run gen_810M_b256 120 benchmarks/generate.py --size=810M --dtype=bfloat16 --batch=256 --prompt=128 --new=128
fi
