#!/usr/bin/env bash
# Set up (idempotent), then lint, format check, type check and the test suite. Real-model tests marked
# "slow" are skipped here (run them with: .venv/bin/python -m pytest -m slow); the real-model smoke tests and
# the notebooks run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check anchorlens tests benchmarks
.venv/bin/ruff format --check anchorlens tests benchmarks
.venv/bin/mypy
# The notebooks run top to bottom on the offline model (nbmake; HTML outputs are not compared).
.venv/bin/python -m pytest -m "not slow" -q --nbmake tests notebooks "$@"
