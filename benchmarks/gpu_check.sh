#!/usr/bin/env bash
# One short GPU check (under 5 minutes on an H100): a tiny training on CUDA with 16-mixed, bf16-mixed and fp32,
# then the training-step benchmark at the full 129,600-minute window, padded and packed, fp32 and bf16.
# Needs a Python with lstm-trading's dependencies and a CUDA build of torch; run from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
timeout 150 "$PYTHON" benchmarks/gpu_check.py
timeout 150 "$PYTHON" benchmarks/train_step.py --device cuda --lengths 8640 129600 --repeats 2 --precision fp32
timeout 120 "$PYTHON" benchmarks/train_step.py --device cuda --lengths 129600 --repeats 2 --precision bf16
