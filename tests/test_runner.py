from __future__ import annotations

import pytest
import torch

import anchorlens as al


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_equals_unbatched(tiny, toy_task, side: str) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=8, shots=1, seed=1)
    assert len({len(p) for p in ps}) > 1  # padding really happens
    one = al.predict(tiny, ps, batch_size=1)
    many = al.predict(tiny, ps, batch_size=8, padding_side=side)  # type: ignore[arg-type]
    torch.testing.assert_close(many.label_logits, one.label_logits, atol=1e-5, rtol=1e-5)
    assert torch.equal(many.predictions, one.predictions)
    assert al.word_loyalty(many, one) == 1.0


def test_target_logits_equal_a_plain_forward(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    p = al.build_prompts(tiny, toy_task, n=1)[0]
    batch = al.collate([p], 0)
    with torch.no_grad():
        full = tiny(torch.tensor([p.tokens]))[0, -1]
        fast = al.target_logits(tiny, batch)[0]
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
    pred = al.predict(tiny, [p], top_k=3)
    assert pred.label_logits[0].tolist() == pytest.approx(full[list(p.label_token_ids)].tolist(), abs=1e-5)
    assert set(pred.topk[0].tolist()) == set(full.topk(3).indices.tolist())


def test_hooks_apply_and_never_leak(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=2)
    base = al.predict(gpt2_like, ps)
    seen = []

    def record(x: torch.Tensor, hook) -> None:  # type: ignore[no-untyped-def]
        seen.append(hook.name)

    al.predict(gpt2_like, ps, fwd_hooks=[("blocks.0.attn.hook_pattern", record)])
    assert seen == ["blocks.0.attn.hook_pattern"]

    def boom(x: torch.Tensor, hook) -> None:  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        al.predict(gpt2_like, ps, fwd_hooks=[("blocks.0.attn.hook_pattern", boom)])
    assert all(not hp.fwd_hooks for hp in gpt2_like.hook_dict.values())
    torch.testing.assert_close(al.predict(gpt2_like, ps).label_logits, base.label_logits)


def test_predict_bad_input(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(al.AnchorlensError, match="No prompts"):
        al.predict(gpt2_like, [])
    with pytest.raises(al.AnchorlensError, match="batch_size"):
        list(al.iter_batches(gpt2_like, al.build_prompts(gpt2_like, toy_task, n=1), batch_size=0))
