#!/usr/bin/env bash
# The GPU check of benchmarks/gpu.py in at most 8 minutes (hard limit: timeout 480 s; the script
# stops starting parts at --budget-s 460 and writes results/benchmarks/gpu.json after each part).
#
#   benchmarks/gpu.sh            # on a machine with a CUDA GPU, from the repository root
#   benchmarks/gpu.sh --dry      # every part on the CPU at a tiny size (what the tests run)
#   PYTHON=/path/to/python benchmarks/gpu.sh   # another environment (default: .venv/bin/python)
#
# The environment needs brainssl's dependencies (pip install -e . or the train env) with a CUDA
# build of torch, and snakemake on PATH beside that Python. Then:
#   .venv/bin/python benchmarks/plan.py --gpu-json results/benchmarks/gpu.json
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
export PATH="$(dirname "$PYTHON"):$PATH" PYTHONPATH="src${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --signal=TERM --kill-after=10 480 "$PYTHON" benchmarks/gpu.py "$@"
