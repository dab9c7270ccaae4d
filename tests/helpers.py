"""Helpers shared by the tests: small task folders in the format a user's own task takes, and the arguments
of a tiny ``anchorlens reproduce``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _write(
    folder: Path, template: str, words: list[str], train: list[tuple[str, int]], test: list[tuple[str, int]]
) -> Path:
    folder.mkdir()
    (folder / "task.json").write_text(json.dumps({"template": template, "label_words": words}))
    for split, rows in (("train", train), ("test", test)):
        (folder / f"{split}.jsonl").write_text(
            "".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows)
        )
    return folder


def user_task(folder: Path) -> Path:
    """A two-class sentiment task folder: 4 train and 4 test examples, 2 per class."""
    rows = [("it was good", 1), ("a great film", 1), ("very bad", 0), ("not good", 0)]
    test = [(t + " movie", y) for t, y in rows]
    return _write(folder, "Review: {text}\nSentiment:{label}", [" Negative", " Positive"], rows, test)


def three_class_task(folder: Path) -> Path:
    """A three-class news task folder: 18 examples, 6 per class, the same in train and test."""
    texts = [["the world", "a market"], ["the game", "the team"], ["the stock", "a market"]]
    rows = [(f"{t} {w}", y) for y, ts in enumerate(texts) for t in ts for w in ("is good", "was bad", "not")]
    return _write(folder, "Article: {text}\nAnswer:{label}", [" World", " Sports", " Business"], rows, rows)


def tiny_reproduce(folder: Path, monkeypatch: Any) -> list[str]:
    """``anchorlens reproduce`` arguments for :func:`three_class_task` (written to ``folder / "news"``): one
    isolated layer, one re-weighting epoch, 2 random-top draws; a 3-layer tiny model stands in for every
    model load (through ``monkeypatch``). Add ``--n``, ``--seeds``, ``--out`` and the rest."""
    import anchorlens as al

    monkeypatch.setattr(
        "anchorlens.core.models.load_model", lambda *a, **k: al.tiny_model(n_layers=3, seed=3)
    )
    task = str(three_class_task(folder / "news"))
    return ["reproduce", "--tasks", task, "--k", "1", "--reweight-epochs", "1", "--random-top", "2"]
