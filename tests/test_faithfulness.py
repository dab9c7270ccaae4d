from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import anchorlens as al
from anchorlens.core.batch import sorted_batches
from anchorlens.core.hooks import cut_edges_hooks
from anchorlens.experiments.faithfulness.compute import (
    FaithfulnessResult,
    _row_losses,
    _run,
    faithfulness,
    faithfulness_command,
    first_order,
    scaled_loss,
)
from anchorlens.experiments.saliency.compute import flow_masks


def _batch(model, task, n: int = 4):  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(model, task, n=n, seed=0, resample=True)
    index, batch = next(iter(sorted_batches(model, prompts, batch_size=n)))
    return prompts, index, batch


@pytest.mark.parametrize("group", [0, 1, 2])
def test_first_order_matches_finite_differences(tiny, toy_task, group: int) -> None:  # type: ignore[no-untyped-def]
    _, index, batch = _batch(tiny, toy_task)
    mask = flow_masks(batch, batch.tokens.shape[1])[group]
    layer, eps = 1, 1e-2
    with torch.enable_grad():
        loss1, g1 = first_order(tiny, batch, index, [0, 1])
        at_one, g_at_one = scaled_loss(tiny, batch, index, layer, mask, 1.0)
        up, _ = scaled_loss(tiny, batch, index, layer, mask, 1.0 + eps)
        down, _ = scaled_loss(tiny, batch, index, layer, mask, 1.0 - eps)
    torch.testing.assert_close(at_one, loss1, rtol=1e-5, atol=1e-6)  # s = 1 is the unmodified model
    torch.testing.assert_close(g_at_one, g1[layer, group], rtol=1e-4, atol=1e-6)
    finite = (up - down) / (2 * eps)
    torch.testing.assert_close(g1[layer, group], finite, rtol=2e-2, atol=1e-4)


def test_scale_zero_is_the_post_softmax_cut(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    _, index, batch = _batch(tiny, toy_task)
    mask = flow_masks(batch, batch.tokens.shape[1])[0]
    with torch.enable_grad():
        cut, _ = scaled_loss(tiny, batch, index, 0, mask, 0.0)
    with torch.no_grad():
        direct = _row_losses(_run(tiny, batch, index, None, cut_edges_hooks([0], mask, mode="post")), batch)
    assert torch.equal(cut, direct)


def test_completeness_error_shrinks_with_steps(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(tiny, toy_task, n=4, seed=0, resample=True)
    errors = [faithfulness(tiny, prompts, steps=m).completeness_error for m in (1, 2, 8)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 10 + 1e-7 and errors[2] < 0.05


def test_result_shapes_and_json_round_trip(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(gpt2_like, toy_task, n=3, seed=0, resample=True)
    result = faithfulness(gpt2_like, prompts, steps=2, layers=[1], batch_size=2)
    assert result.measured.shape == (1, 3) and result.layers == (1,) and result.n == 3
    again = FaithfulnessResult.from_json(json.loads(json.dumps(result.to_json())))
    torch.testing.assert_close(again.integrated, result.integrated)


def test_caller_hooks_are_applied_first(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(gpt2_like, toy_task, n=4, seed=0, resample=True)
    seen: list[tuple[int, ...]] = []

    def hooks(batch):  # type: ignore[no-untyped-def]
        seen.append(batch.indices)

        def zero_head(pattern, hook):  # type: ignore[no-untyped-def]
            pattern = pattern.clone()
            pattern[:, 0] = 0
            return pattern

        return [("blocks.0.attn.hook_pattern", zero_head)]

    plain = faithfulness(gpt2_like, prompts, steps=1, batch_size=2)
    hooked = faithfulness(gpt2_like, prompts, steps=1, batch_size=2, fwd_hooks=hooks)
    assert sorted(i for s in set(seen) for i in s) == [0, 1, 2, 3]
    assert not torch.allclose(plain.measured, hooked.measured)
    with pytest.raises(al.AnchorlensError, match="no hook point"):
        faithfulness(
            gpt2_like, prompts, steps=1, fwd_hooks=[("blocks.0.attn.hook_patern", lambda x, hook: x)]
        )


def test_faithfulness_command_writes_json_and_plot(gpt2_like, toy_task, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = faithfulness_command(gpt2_like, toy_task, 4, tmp_path, steps=2, seed=1)
    on_disk = json.loads((tmp_path / "faithfulness.json").read_text())
    assert on_disk == data
    assert set(data["first_order"]) == {"spearman", "n_points"} and data["first_order"]["n_points"] == 6
    assert {"spearman", "completeness_error", "steps"} <= set(data["integrated_gradients"])
    assert data["integrated_gradients"]["steps"] == 2
    assert (tmp_path / "faithfulness.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(al.AnchorlensError, match="steps must be"):
        faithfulness_command(gpt2_like, toy_task, 4, tmp_path, steps=0)
