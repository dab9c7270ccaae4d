"""The notebooks are stored with fresh outputs: every code cell has output, and the code they were run
from is the code they hold (``scripts/notebooks.py`` records its hash). CI also runs them (nbmake)."""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
REFRESH = ".venv/bin/python scripts/notebooks.py"


@functools.cache
def _script() -> Any:
    """scripts/notebooks.py, loaded once: its code_hash is the one the refresh records."""
    spec = importlib.util.spec_from_file_location("refresh_notebooks", ROOT / "scripts" / "notebooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stale(path: Path) -> list[str]:
    """What is wrong with the stored outputs of the notebook at ``path`` (empty: nothing)."""
    nb = json.loads(path.read_text())
    problems = []
    recorded = nb["metadata"].get("anchorlens", {}).get("code_sha256")
    if recorded != _script().code_hash(nb):
        problems.append(
            "its code changed since its outputs were made" if recorded else "it has no recorded run"
        )
    cells = [c for c in nb["cells"] if c["cell_type"] == "code"]
    empty = [i for i, c in enumerate(cells, 1) if not c.get("outputs")]
    if empty:
        problems.append(f"code cells {empty} have no output")
    errors = [o.get("ename") for c in cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        problems.append(f"it stored errors {errors}")
    return [f"{path.name}: {p}; refresh it with `{REFRESH} {path.stem}`" for p in problems]


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 9


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_outputs_are_fresh(path: Path) -> None:
    problems = stale(path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_small_enough_for_a_repository(path: Path) -> None:
    """Figures as PNG; a circuitsvis view inlines its 1.3 MB bundle (so it works offline): one per notebook."""
    assert path.stat().st_size < 2 * 2**20, f"{path.name}: {path.stat().st_size / 2**20:.1f} MB"


def test_an_edited_notebook_is_stale_and_names_the_script(tmp_path: Path) -> None:
    nb = json.loads(NOTEBOOKS[0].read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code")
    code["source"] = [*code["source"], "\nprint('edited')"]
    edited = tmp_path / NOTEBOOKS[0].name
    edited.write_text(json.dumps(nb))
    (message,) = stale(edited)
    assert "code changed" in message and f"{REFRESH} {NOTEBOOKS[0].stem}" in message
    code["outputs"] = []
    edited.write_text(json.dumps(nb))
    assert any("have no output" in m for m in stale(edited))
