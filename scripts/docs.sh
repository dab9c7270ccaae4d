#!/usr/bin/env bash
# Build the documentation site into site/ (mkdocs-material, mkdocstrings, mkdocs-jupyter; mkdocs.yml):
# warnings are errors, so a broken internal link or a docstring the reference cannot read fails the build.
# The notebooks are rendered with their stored outputs (never executed here: scripts/notebooks.py makes them).
# Open site/index.html in a browser (plain files, no server needed). Needs the dev set-up (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --clean "$@"
echo "site built: $(find site -name '*.html' | wc -l) pages in site/ (open site/index.html)"
