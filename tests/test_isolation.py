from __future__ import annotations

import pytest
import torch

import anchorlens as al
from anchorlens.core.hooks import cut_edges_hooks
from anchorlens.experiments.isolation.compute import (
    isolation_hooks,
    isolation_mask,
    random_positions,
    resolve_layers,
)


def _logits(model, batch, hooks=()):  # type: ignore[no-untyped-def]
    with torch.no_grad(), model.hooks(fwd_hooks=list(hooks)):
        return model(batch.tokens, attention_mask=batch.attention_mask)


@pytest.mark.parametrize("mode", ["pre", "post"])
def test_isolating_nothing_is_the_identity(tiny, toy_task, mode: str) -> None:  # type: ignore[no-untyped-def]
    batch = al.collate(al.build_prompts(tiny, toy_task, n=3).prompts, 0)
    none = torch.zeros(len(batch), batch.tokens.shape[1], batch.tokens.shape[1], dtype=torch.bool)
    torch.testing.assert_close(
        _logits(tiny, batch, cut_edges_hooks([0, 1], none, mode)), _logits(tiny, batch), rtol=0, atol=0
    )


def test_post_softmax_cut_of_every_edge_gives_the_value_less_output(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    batch = al.collate(al.build_prompts(gpt2_like, toy_task, n=1).prompts, 0)
    p = batch.prompts[0].label_positions[0]
    cut = torch.zeros(1, batch.tokens.shape[1], batch.tokens.shape[1], dtype=torch.bool)
    cut[0, p, : p + 1] = True  # every edge into p, the diagonal included
    out = {}
    hooks = [
        *cut_edges_hooks([1], cut, "post"),
        ("blocks.1.hook_attn_out", lambda x, hook: out.setdefault("x", x)),
    ]
    _logits(gpt2_like, batch, hooks)
    torch.testing.assert_close(out["x"][0, p], gpt2_like.blocks[1].attn.b_O, rtol=0, atol=1e-6)
    assert not torch.allclose(out["x"][0, p + 1], gpt2_like.blocks[1].attn.b_O)


def test_pre_softmax_isolated_rows_attend_only_to_themselves(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    batch = al.collate(al.build_prompts(tiny, toy_task, n=2).prompts, 0, padding_side="left")
    seen = {}
    hooks = [
        *isolation_hooks(batch, [p.label_positions for p in batch.prompts], [0]),
        ("blocks.0.attn.hook_pattern", lambda x, hook: seen.setdefault("p", x)),
        ("blocks.1.attn.hook_pattern", lambda x, hook: seen.setdefault("q", x)),
    ]
    _logits(tiny, batch, hooks)
    for r in range(2):
        for p in batch.label_positions[r].tolist():
            row = seen["p"][r, :, p]
            assert torch.allclose(row[:, p], torch.ones(row.shape[0])) and float(
                row.sum(-1).max()
            ) == pytest.approx(1)
            assert float(seen["q"][r, :, p, :p].sum()) > 0  # other layers untouched


def test_random_positions(toy_task, gpt2_like) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=4, shots=2)
    for i, p in enumerate(ps):
        pos = random_positions(p, seed=1, index=i)
        assert pos == random_positions(p, seed=1, index=i)
        assert len(pos) == len(p.label_positions) == 4
        assert set(pos) <= set(p.text_positions())
        assert not set(pos) & (set(p.label_positions) | {p.target} | set(p.format_positions))
    assert any(random_positions(p, 1, i) != random_positions(p, 2, i) for i, p in enumerate(ps))


def test_layers_and_positions_bad_input(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    assert resolve_layers(2, "last", 1) == [1] and resolve_layers(2, [-1, 0]) == [0, 1]
    with pytest.raises(al.AnchorlensError, match="k must be between 1 and the model's 2 layers"):
        resolve_layers(2, "first", 3)
    with pytest.raises(al.AnchorlensError, match="Layer 2 is out of range"):
        resolve_layers(2, [2])
    with pytest.raises(al.AnchorlensError, match="No layers"):
        resolve_layers(2, [])
    batch = al.collate(al.build_prompts(gpt2_like, toy_task, n=1).prompts, 0)
    with pytest.raises(al.AnchorlensError, match="empty position set"):
        isolation_mask(batch, [[]])
    with pytest.raises(al.AnchorlensError, match="Position 999 is outside"):
        isolation_mask(batch, [[999]])
    with pytest.raises(al.AnchorlensError, match="k must be between"):
        al.isolation(gpt2_like, al.build_prompts(gpt2_like, toy_task, n=1), ks=(7,))


def test_isolation_sweep(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=6, seed=2)
    res = al.isolation(tiny, ps, ks=(1, 2), batch_size=4)
    assert len(res.runs) == 2 * 2 * 2
    first, last = res.get("label", "first", 2), res.get("label", "last", 2)
    # k = all layers: first and last are the same set
    assert (first.label_loyalty, first.word_loyalty) == (last.label_loyalty, last.word_loyalty)
    js = res.to_json()
    assert {"anchors", "layers", "k", "label_loyalty", "word_loyalty", "accuracy"} == set(
        js["results"][0]
    ) - {"predictions"}
    assert all(0 <= r["word_loyalty"] <= 1 for r in js["results"])
    # batched and one-at-a-time agree
    one = al.isolation(tiny, ps, ks=(1,), anchors=("label",), layer_sets=("first",), batch_size=1)
    assert one.runs[0] == res.get("label", "first", 1)
