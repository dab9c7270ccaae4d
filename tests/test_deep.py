from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score

import anchorlens as al
from anchorlens.experiments.deep.compute import auc_by_class, cumulative_r


def test_binary_auc_uses_raw_attention_to_the_second_class() -> None:
    scores = torch.tensor([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4], [0.2, 0.1]])
    pred = [1, 0, 1, 0]
    auc, note = auc_by_class(scores, pred)
    assert note == "" and auc == pytest.approx(roc_auc_score([1, 0, 1, 0], [0.9, 0.2, 0.4, 0.1]))


def test_multiclass_auc_is_ovo_macro_on_normalised_kept_classes() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(40, 4, generator=g)
    pred = torch.randint(0, 3, (40,), generator=g)  # class 3 never predicted: dropped
    auc, _ = auc_by_class(scores, pred)
    kept = scores[:, :3] / scores[:, :3].sum(1, keepdim=True)
    assert auc == pytest.approx(
        roc_auc_score(pred.numpy(), kept.numpy(), multi_class="ovo", labels=[0, 1, 2])
    )


def test_auc_undefined_with_one_predicted_class() -> None:
    auc, note = auc_by_class(torch.rand(5, 2), [1] * 5)
    assert auc is None and "predictions contain only class [1]" in note


def test_cumulative_r() -> None:
    assert cumulative_r([0.5, 0.6, 0.9]) == pytest.approx([0.0, 0.2, 1.0])
    assert cumulative_r([0.5, 0.4]) is None


def test_attention_matches_a_cache_read(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=3, shots=2, seed=1)
    res = al.deep(tiny, ps, batch_size=2, padding_side="left")
    assert res.attention.shape == (3, 2, 2)
    for i, p in enumerate(ps):
        _, cache = tiny.run_with_cache(
            torch.tensor([p.tokens]), names_filter=lambda n: n.endswith("hook_pattern")
        )
        for layer in range(2):
            row = cache["pattern", layer][0, :, p.target].sum(0)
            for c in range(2):
                expected = sum(float(row[q]) for q in p.class_positions(c))
                assert float(res.attention[i, layer, c]) == pytest.approx(expected, abs=1e-6)
    ref = al.predict(tiny, ps)
    assert torch.equal(res.predictions.predictions, ref.predictions)


def test_deep_result_json_and_undefined_auc(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    res = al.deep(gpt2_like, al.build_prompts(gpt2_like, toy_task, n=8))
    js = res.to_json()
    assert js["n_layers"] == 2 and len(js["aucroc"]) == 2
    if None in js["aucroc"]:
        assert "AUC undefined" in js["note"] and js["R"] is None
    single = al.deep(gpt2_like, al.build_prompts(gpt2_like, toy_task, n=1))
    assert single.aucroc == (None, None) and "at least two classes" in single.note
    assert "note" in single.to_json() and single.to_json()["R"] is None


def test_gold_curve(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    res = al.deep(tiny, al.build_prompts(tiny, toy_task, n=8))
    aucs, _, _ = res.curve("gold")
    gold = res.predictions.labels
    expected = [auc_by_class(res.attention[:, layer], gold)[0] for layer in range(2)]
    assert list(aucs) == expected and "aucroc_gold" in res.to_json()
    with pytest.raises(al.AnchorlensError, match="against must be"):
        res.curve("labels")
