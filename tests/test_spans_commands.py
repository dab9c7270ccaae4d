"""The bodies of ``anchorlens flow`` and ``discover`` (anchorlens.spans.commands), called directly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from anchorlens.errors import AnchorlensError
from anchorlens.spans.commands import flow_command, read_flow_prompts


class NoModel:
    """Fails on any use: the prompt file must be checked before the model is touched."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the model was used ({name}) before the prompt file was read")


def test_missing_prompt_file_names_the_file_before_the_model_runs(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(AnchorlensError, match=r"missing\.json' does not exist"):
        read_flow_prompts(missing)
    with pytest.raises(AnchorlensError, match=r"missing\.json' does not exist.*JSON or JSONL"):
        flow_command(NoModel(), missing, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prompt_file_that_is_a_folder(tmp_path: Path) -> None:
    with pytest.raises(AnchorlensError, match="is a folder, not a file"):
        read_flow_prompts(tmp_path)


def test_prompt_file_records_are_read(tmp_path: Path) -> None:
    f = tmp_path / "p.jsonl"
    f.write_text('{"text": "a b", "spans": {"x": "a"}}\n{"text": "c d", "spans": {"x": "c"}}\n')
    assert [r["text"] for r in read_flow_prompts(f)] == ["a b", "c d"]
