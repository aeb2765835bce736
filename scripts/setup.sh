#!/usr/bin/env bash
# Creates .venv in the repository and installs lstm-trading with its test tools, from this repo's files only.
# torch is pinned first to the CPU build (a bare `torch` would pull several GB of CUDA wheels); the package's
# own `torch>=2.2` is then already satisfied. On a GPU machine, install the CUDA build of torch instead.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
