"""The documentation site: it builds with warnings as errors, a broken internal link fails the build, and the
API reference covers every public name. (What a person sees in a browser: tests/test_browser.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import anchorlens

ROOT = Path(__file__).resolve().parent.parent
MKDOCS = [sys.executable, "-m", "mkdocs"]
pytest.importorskip("mkdocs", reason="the docs tools come with the dev set-up (scripts/setup.sh)")


def build(config: Path, site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    cmd = [*MKDOCS, "build", "--strict", "-f", str(config), "-d", str(site)]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


def test_the_site_builds_with_no_warning(tmp_path: Path) -> None:
    done = build(ROOT / "mkdocs.yml", tmp_path / "site")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "WARNING" not in done.stderr, done.stderr[-3000:]
    pages = list((tmp_path / "site").rglob("*.html"))
    assert len(pages) >= 25 and (tmp_path / "site" / "notebooks" / "workshop.html").exists()


def test_a_broken_internal_link_fails_the_build(tmp_path: Path) -> None:
    """The site's own link validation (mkdocs.yml's ``validation``) under ``--strict``, on a one-page site."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text("# Home\n\nSee [the experiment](experiments/no-such-page.md).\n")
    config.update(docs_dir=str(docs), nav=["index.md"], plugins=["search"])
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(config))
    done = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert done.returncode != 0 and "experiments/no-such-page.md" in done.stderr


def test_the_api_reference_lists_every_public_name() -> None:
    api = (ROOT / "docs" / "api.md").read_text()
    missing = [
        name
        for name, module in anchorlens._LAZY.items()
        if f"::: {module}" not in api or f"- {name}\n" not in api
    ]
    assert not missing, f"docs/api.md lacks {missing}"
