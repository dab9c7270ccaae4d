#!/usr/bin/env bash
# Set up (idempotent), then run the main job on the bundled offline model and the shared data.
# Extra arguments go to the command (e.g. --n 200).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/anchorlens predict --model smollm2-135m --task sst2 --shots 1 --n 100 --seed 42 --out runs/predict "$@"
