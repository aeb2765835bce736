#!/usr/bin/env bash
# One short GPU check (under 5 minutes on an H100; every step has its own time limit, and a step that runs out
# of time is reported and skipped, so the rest still runs):
#   1. a tiny training end to end on CUDA with 16-mixed, bf16-mixed and fp32 (cuDNN on);
#   2. the training step at 8,640 and 129,600 steps, padded and packed cuDNN, plain and chunked (auto: 4,096 steps on CUDA), fp32;
#   3. the same at 32,768 steps under fp16 and bf16 autocast;
#   4. a mixed-length epoch on a real journal's window lengths: padded against packed (which `auto` should use);
#   5. inference throughput (run_windows on the GPU against a bare nn.LSTM forward).
# Needs a Python with lstm-trading's dependencies and a CUDA build of torch. Run from the repository root:
#   PYTHONPATH=src bash benchmarks/gpu_check.sh        (PYTHON=.venv/bin/python to choose the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step() {  # step SECONDS COMMAND...: run with a time limit; report a timeout or failure and go on
    local limit=$1
    shift
    echo "== $* (limit ${limit}s)"
    timeout "$limit" "$@"
    local status=$?
    if [ "$status" -eq 124 ]; then echo "== timed out after ${limit}s"; elif [ "$status" -ne 0 ]; then echo "== failed ($status)"; fi
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
step 60 "$PYTHON" benchmarks/gpu_check.py
step 90 "$PYTHON" benchmarks/train_step.py --device cuda --lengths 8640 129600 --paths padded packed \
    --chunk-lens auto --rounds 1 --repeats 1 --precision fp32
step 35 "$PYTHON" benchmarks/train_step.py --device cuda --lengths 32768 --paths padded packed --chunk-lens auto \
    --rounds 1 --repeats 1 --precision fp16
step 35 "$PYTHON" benchmarks/train_step.py --device cuda --lengths 32768 --paths padded packed --chunk-lens auto \
    --rounds 1 --repeats 1 --precision bf16
step 45 "$PYTHON" benchmarks/epoch.py --device cuda --scale 0.25 --paths padded packed --chunk-lens auto
step 25 "$PYTHON" benchmarks/inference.py --device cuda --lengths 8640 32768 --repeats 1
