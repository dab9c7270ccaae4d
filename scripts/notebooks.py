"""Run the notebooks top to bottom, each in a fresh kernel on the offline model, and store them with their
outputs (figures as PNG, circuitsvis views as their self-contained HTML, tables as text).

Each notebook records in its metadata (``metadata.anchorlens.code_sha256``) the hash of its code cells as
they were run; ``tests/test_notebooks.py`` fails when the code changed since (the outputs are stale) or a
code cell has no output. Cells tagged ``docs-figure`` also write their first PNG to
``docs/figures/<notebook>.png`` for the documentation site.

Usage: ``.venv/bin/python scripts/notebooks.py [NAME ...]`` (default: every ``notebooks/*.ipynb``; a name
is a file name with or without ``.ipynb``). Run one at a time (torch on 2 cores).
"""

from __future__ import annotations

import base64
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
FIGURES = ROOT / "docs" / "figures"
COMMAND = ".venv/bin/python scripts/notebooks.py"


def _text(source: str | list[str]) -> str:
    """A cell's source as one string (the file stores a list of lines, nbformat hands a string)."""
    return source if isinstance(source, str) else "".join(source)


def code_hash(nb: Any) -> str:
    """sha256 of the notebook's code cells' sources, in order (what its outputs were made from)."""
    sources = [_text(cell["source"]) for cell in nb["cells"] if cell["cell_type"] == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def run(path: Path) -> dict[str, Any]:
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    NotebookClient(
        nb, timeout=1800, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    seconds = time.perf_counter() - t0
    empty = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] != "code":
            continue
        cell["metadata"].pop("execution", None)  # timestamps: noise in every diff
        if not cell["outputs"]:
            empty.append(i)
        if "docs-figure" in cell["metadata"].get("tags", []):
            png = next(o["data"]["image/png"] for o in cell["outputs"] if "image/png" in o.get("data", {}))
            FIGURES.mkdir(parents=True, exist_ok=True)
            (FIGURES / f"{path.stem}.png").write_bytes(base64.b64decode(png))
    nb["metadata"]["anchorlens"] = {"code_sha256": code_hash(nb)}
    nbformat.write(nb, path)
    return {
        "notebook": path.name,
        "seconds": round(seconds, 1),
        "bytes": path.stat().st_size,
        "cells_without_output": empty,
    }


def main(names: list[str]) -> None:
    paths = [NOTEBOOKS / (n if n.endswith(".ipynb") else f"{n}.ipynb") for n in names] or sorted(
        NOTEBOOKS.glob("*.ipynb")
    )
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"No such notebook: {', '.join(missing)}")
    for path in paths:
        print(json.dumps(run(path)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
