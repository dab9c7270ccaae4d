"""Models side by side (``anchorlens.report.compare``): ``reproduce --model a,b`` and ``compare``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import anchorlens as al
from anchorlens.cli import main as cli
from anchorlens.report.compare import compare
from tests.helpers import three_class_task

LAYERS = {"smollm2-135m": 3, "gemma3-270m": 4}


def _tiny(name: str, *args: Any, **kwargs: Any) -> Any:
    return al.tiny_model(n_layers=LAYERS[name], seed=LAYERS[name])


def test_reproduce_two_models_writes_one_comparison(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", _tiny)
    task = str(three_class_task(tmp_path / "news"))
    out = tmp_path / "both"
    args = ["reproduce", "--model", "smollm2-135m,gemma3-270m", "--tasks", task, "--n", "9", "--k", "1"]
    args += ["--experiments", "saliency,isolation,deep", "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    for model in LAYERS:  # each model its own report
        results = json.loads((out / model / "results.json").read_text())
        assert results["config"]["model"] == model
    summary = json.loads((out / "compare.json").read_text())
    assert summary["models"] == list(LAYERS)
    for model, n_layers in LAYERS.items():
        curves = summary["curves"][model]
        assert len(curves["S_wp"]) == len(curves["S_pq"]) == n_layers
        assert len(curves.get("aucroc", [0] * n_layers)) == n_layers  # absent where AUCROC is undefined
        assert set(curves["isolation"]) == {"label/first", "random/first", "label/last", "random/last"}
        assert set(summary["claims"][model]) == {"saliency", "isolation", "deep"}
    page = (out / "compare.html").read_text()
    assert page.count("data:image/png;base64,") == 1 and "gemma3-270m verdict" in page
    md = (out / "compare.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith(("| saliency", "| isolation", "| deep"))]
    assert len(rows) == 3 and all(row.count("|") == 2 + 3 * len(LAYERS) for row in rows)
    # the same folders compared again by the command
    assert (
        cli.main(
            ["compare", str(out / "smollm2-135m"), str(out / "gemma3-270m"), "--out", str(tmp_path / "c")]
        )
        == 0
    )
    assert json.loads((tmp_path / "c" / "compare.json").read_text())["curves"] == summary["curves"]


def test_bad_model_lists_are_refused_before_any_model_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def no_model(*a: Any, **k: Any) -> Any:
        raise AssertionError("no model may load")

    monkeypatch.setattr("anchorlens.core.models.load_model", no_model)
    for models, message in (
        ("smollm2-135m,smollm2-135m", "more than once"),
        ("smollm2-135m,no-such-model", "Unknown model 'no-such-model'"),
        (",", "names no model"),
    ):
        assert cli.main(["reproduce", "--model", models, "--out", str(tmp_path / "r")]) == 2
        assert message in capsys.readouterr().err


def test_compare_bad_folders(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for folder in (a, b):
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps({"config": {"model": "m"}, "claims": {}}))
    with pytest.raises(al.AnchorlensError, match="at least two"):
        compare([a], tmp_path / "out")
    with pytest.raises(al.AnchorlensError, match="same model 'm'"):
        compare([a, b], tmp_path / "out")
    assert cli.main(["compare", str(a), str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "has no results.json" in capsys.readouterr().err
