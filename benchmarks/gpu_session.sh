#!/usr/bin/env bash
# Issue 19's GPU measurements in ONE device call of about 8 minutes (benchmarks/README.md):
#   1. the sweep: 7 short trainings on emoji 32x32 side by side on the one card
#      (benchmarks/gpu_sweep.py RUNS), each then sampling N images into $OUT/NAME.npy.xz;
#   2. meanwhile the CUDA tests (pytest -m gpu tests/test_gpu_path.py);
#   3. after the sweep, alone on the card: bench_training.py --device cuda (batches 64, 256).
# Everything else (logs, metrics, configs, grids, bench JSON) goes into $OUT/results.tar.gz:
# 8 files back at most, 16 MiB each. Score the sample files here: benchmarks/score_npz.py.
#
# The data travels with the call (the device machine has no emoji font):
#   carry: ["data/emoji32"]     (built here by: artforge data emoji --size 32 --out data/emoji32)
# Dry run on a CPU, in seconds of training (checks every step of the logic):
#   OUT=/tmp/gs DEVICE=cpu SWEEP_MIN=0.05 N=64 BENCH_FAMILIES=gan:16 bash benchmarks/gpu_session.sh
# A shorter rerun of one part: SKIP_SWEEP=1, SKIP_TESTS=1 and/or SKIP_BENCH=1.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:?set OUT (the device machine sets it)}
DEVICE=${DEVICE:-cuda}
DATA=${DATA:-data/emoji32}
SIZE=${SIZE:-32}
SWEEP_MIN=${SWEEP_MIN:-3}                       # training minutes per sweep run
N=${N:-5000}                                    # samples per run (FID at n=5000)
BENCH_FAMILIES=${BENCH_FAMILIES:-gan:32,vae:32,diffusion:32}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-230}
PY=${PY:-python3}
export PYTHONPATH=src PYTHONUNBUFFERED=1
WORK=$(mktemp -d)
RUNS=$WORK/runs LOGS=$WORK/logs
mkdir -p "$RUNS" "$LOGS"
t0=$(date +%s)
stamp() { echo "[gpu_session +$(( $(date +%s) - t0 ))s] $*"; }

pack() {  # whatever has happened so far comes back, even when a step failed
  cp -r "$RUNS" "$WORK/pack-runs" 2>/dev/null
  find "$WORK/pack-runs" \( -name '*.safetensors' -o -name '*.pt' -o -name 'state*' \) -prune -exec rm -rf {} + 2>/dev/null
  tar -czf "$OUT/results.tar.gz" -C "$WORK" logs pack-runs 2>/dev/null
  ls -la "$OUT"
}
trap pack EXIT

stamp "machine"
{ nvidia-smi 2>&1 | head -15; $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"; nproc; } | tee "$LOGS/machine.txt"
if [ ! -d "$DATA" ]; then
  stamp "no $DATA (carry it); trying to build it here"
  $PY -m artforge data emoji --size "$SIZE" --out "$DATA" >"$LOGS/data.txt" 2>&1 || { stamp "no data: stop"; exit 1; }
fi

# 1. the sweep, every run at once on the one card
stamp "sweep: ${SWEEP_MIN} min per run, $N samples each"
pids=()
[ -n "${SKIP_SWEEP:-}" ] && RUN_LIST="" || RUN_LIST=$($PY benchmarks/gpu_sweep.py runs)
while IFS=$'\t' read -r name flags; do
  [ -n "$name" ] || continue
  (
    # shellcheck disable=SC2086  # flags is a list of words
    $PY -m artforge -q train --data "$DATA" --size "$SIZE" --minutes "$SWEEP_MIN" --device "$DEVICE" \
      --out "$RUNS/$name" $flags >"$LOGS/$name.txt" 2>&1 \
      && $PY benchmarks/gpu_sweep.py sample "$RUNS/$name" "$N" "$OUT/$name.npy.xz" >>"$LOGS/$name.txt" 2>&1
    echo "exit $?" >>"$LOGS/$name.txt"
  ) &
  pids+=($!)
done <<<"$RUN_LIST"

# 2. the CUDA tests, while the sweep trains (correctness, not timing)
if [ -z "${SKIP_TESTS:-}" ]; then
  stamp "pytest -m gpu"
  timeout 240 $PY -m pytest -q -m gpu tests/test_gpu_path.py -p no:cacheprovider >"$LOGS/pytest-gpu.txt" 2>&1
  stamp "pytest exit $?: $(tail -1 "$LOGS/pytest-gpu.txt")"
fi

for p in "${pids[@]}"; do wait "$p"; done
if [ -z "${SKIP_SWEEP:-}" ]; then
  stamp "sweep done"
  $PY benchmarks/gpu_sweep.py summary "$RUNS" | tee "$LOGS/sweep-summary.txt"
  $PY benchmarks/gpu_sweep.py fit "$OUT" 60 | tee -a "$LOGS/sweep-summary.txt"  # 64 MiB come back
  grep -h "^artforge:\|Error\|^exit" "$LOGS"/*-*.txt | sort | uniq -c | head -20
fi
[ -n "${SKIP_BENCH:-}" ] && { stamp "done"; exit 0; }

# 3. the benchmark, alone on the card
stamp "bench_training --device $DEVICE"
report=()
[ "$DEVICE" = cuda ] || report=(--gpu-report)
timeout "$BENCH_TIMEOUT" $PY benchmarks/bench_training.py --device "$DEVICE" "${report[@]}" \
  --families "$BENCH_FAMILIES" --steps "${BENCH_STEPS:-20}" --repeats 3 --json "$LOGS/bench-cuda.json" \
  2>&1 | tee "$LOGS/bench-cuda.txt"
stamp "bench exit ${PIPESTATUS[0]}"
stamp "done"
