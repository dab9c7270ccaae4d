#!/usr/bin/env bash
# Set up (idempotent), then lint, format check, type check and the test suite. Real-model tests marked
# "slow" are skipped here (run them with: .venv/bin/python -m pytest -m slow); the real-model smoke tests and
# the notebooks run. Then the TransformerBridge tests again in a second environment with TransformerLens 4.3
# (.venv-tl4, which has no HookedTransformer; scripts/setup_tl4.sh, about 1.5 min from scratch).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check anchorlens tests benchmarks
.venv/bin/ruff format --check anchorlens tests benchmarks
.venv/bin/mypy
bash scripts/docs.sh >/dev/null  # the documentation site, warnings as errors
# The notebooks run top to bottom on the offline model (nbmake; their stored outputs are checked for staleness
# by tests/test_notebooks.py); tests/test_browser.py opens the site and a report in headless Chromium.
.venv/bin/python -m pytest -m "not slow" -q --nbmake tests notebooks "$@"
bash scripts/setup_tl4.sh
.venv-tl4/bin/python -m pytest -q -p no:cacheprovider tests/test_bridge.py
