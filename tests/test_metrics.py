from __future__ import annotations

import pytest
import torch

import anchorlens as al
from anchorlens.core.metrics import jaccard


def preds(logits: list[list[float]], topk: list[list[int]], labels: list[int]) -> al.Predictions:
    return al.Predictions(torch.tensor(logits, dtype=torch.float), torch.tensor(topk), torch.tensor(labels))


def test_accuracy_and_label_loyalty() -> None:
    a = preds([[1, 0], [0, 1], [0, 1]], [[1, 2], [1, 2], [1, 2]], [0, 0, 1])
    b = preds([[1, 0], [1, 0], [1, 0]], [[1, 2], [1, 2], [1, 2]], [0, 0, 1])
    assert a.accuracy == pytest.approx(2 / 3)
    assert al.label_loyalty(a, b) == pytest.approx(1 / 3)
    assert al.label_loyalty(a, a) == 1.0


def test_word_loyalty_is_mean_jaccard_of_unordered_sets() -> None:
    ref = preds([[0, 1]] * 2, [[1, 2, 3, 4, 5], [1, 2, 3, 4, 5]], [1, 1])
    run = preds([[0, 1]] * 2, [[5, 4, 3, 2, 1], [1, 2, 6, 7, 8]], [1, 1])
    # row 0: same set in another order -> 1; row 1: |{1,2}| / |{1..8}| = 2/8
    assert al.word_loyalty(run, ref) == pytest.approx((1 + 2 / 8) / 2)
    assert al.word_loyalty(run, ref, k=2) == pytest.approx((0 + 1) / 2)
    naive = [
        len(set(x) & set(y)) / len(set(x) | set(y))
        for x, y in zip(run.topk.tolist(), ref.topk.tolist(), strict=True)
    ]
    assert jaccard(run.topk, ref.topk).tolist() == pytest.approx(naive)


def test_bad_metric_input() -> None:
    a = preds([[1, 0]], [[1]], [-1])
    with pytest.raises(al.AnchorlensError, match="no gold label"):
        _ = a.accuracy
    with pytest.raises(al.AnchorlensError, match="same prompts"):
        al.label_loyalty(a, preds([[1, 0]] * 2, [[1]] * 2, [0, 0]))
    with pytest.raises(al.AnchorlensError, match="only 1 top tokens"):
        al.word_loyalty(a, a, k=3)
