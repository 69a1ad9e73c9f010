#!/usr/bin/env bash
# The tests README's test command leaves out (marked `slow`: the benchmark scripts end to end,
# every export runtime, the ResNet-50 and DDP pretrained resumes, float64 PTX; about 5 min on
# a 2-core machine). Run before touching scripts/, rfcn/export or the resume path:
#   bash scripts/slow_tests.sh [pytest options]
set -euo pipefail
cd "$(dirname "$0")/.."
exec python -m pytest -m slow "$@"
