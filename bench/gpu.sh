#!/usr/bin/env bash
# The prepared GPU run (bench/gpu.py): training under --precision 16 and bf16, inference options against the
# batched facenet-pytorch floor, MTCNN size buckets; one Markdown report with the card's name, in under 8 minutes.
# Usage: bash bench/gpu.sh [--shrink] [--ckpt AGE_CKPT] [REPORT.md]   (paths from the repository root;
# default gpu_report.md; --shrink: everything tiny, on the CPU, to check the script end to end)
set -eu
cd "$(dirname "$0")/.."  # `python -m bench.gpu` runs from the repository root
exec uv run python -m bench.gpu "$@"
