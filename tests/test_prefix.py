"""Prefix reuse: the shared demonstrations run once, the queries on their key/value cache; every experiment's
result equals the full prompts' (on both tiny models), and a caller's hooks only see the cached path when
they opt in."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

import anchorlens as al
from anchorlens.core.kvcache import shared_prefix
from anchorlens.core.runner import PrefixCacheFallback, forward_batches
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.diagnosis.compute import collect_keys_queries


@pytest.fixture
def prompts(tiny: Any, toy_task: al.Task) -> al.PromptSet:
    return al.build_prompts(tiny, toy_task, n=8, shots=1, seed=42)


def kinds(model: Any, prompts: Any, **kw: Any) -> list[str]:
    with torch.no_grad():
        return [b.kind for _, b, _ in forward_batches(model, prompts, batch_size=3, share_prefix=True, **kw)]


def same_predictions(a: al.Predictions, b: al.Predictions) -> None:
    assert torch.equal(a.predictions, b.predictions)
    assert torch.equal(a.topk, b.topk)
    torch.testing.assert_close(a.label_logits, b.label_logits, atol=1e-5, rtol=1e-5)


def test_the_loop_runs_queries_on_the_cache(tiny: Any, prompts: al.PromptSet) -> None:
    assert shared_prefix(prompts) == prompts[0].tokens[: prompts[0].query_start]
    assert kinds(tiny, prompts) == ["query"] * 3
    assert kinds(tiny, prompts, prefix_cache=False) == ["full"] * 3


def test_predict_equals_full_prompts(tiny: Any, prompts: al.PromptSet) -> None:
    full = al.predict(tiny, prompts, batch_size=3, prefix_cache=False)
    same_predictions(al.predict(tiny, prompts, batch_size=3), full)
    same_predictions(al.predict(tiny, prompts, batch_size=3, padding_side="left"), full)


def test_isolation_equals_full_prompts(tiny: Any, prompts: al.PromptSet) -> None:
    full = al.isolation(tiny, prompts, ks=(1,), batch_size=3, prefix_cache=False)
    reuse = al.isolation(tiny, prompts, ks=(1,), batch_size=3)
    for a, b in zip(full.runs, reuse.runs, strict=True):
        assert (a.label_loyalty, a.word_loyalty, a.accuracy) == (b.label_loyalty, b.word_loyalty, b.accuracy)
        assert a.predictions is not None and b.predictions is not None
        same_predictions(b.predictions, a.predictions)


def test_isolate_as_fwd_hooks_reuses_the_prefix(tiny: Any, prompts: al.PromptSet) -> None:
    label = al.isolate(prompts, [0])
    assert kinds(tiny, prompts, fwd_hooks=label) == ["query"] * 3
    assert kinds(tiny, prompts, fwd_hooks=al.isolate(prompts, [0], anchors="random")) == ["full"] * 3
    same_predictions(
        al.predict(tiny, prompts, fwd_hooks=label),
        al.predict(tiny, prompts, fwd_hooks=label, prefix_cache=False),
    )


def test_deep_equals_full_prompts(tiny: Any, prompts: al.PromptSet) -> None:
    full = al.deep(tiny, prompts, batch_size=3, prefix_cache=False)
    reuse = al.deep(tiny, prompts, batch_size=3)
    torch.testing.assert_close(reuse.attention, full.attention, atol=1e-6, rtol=1e-5)
    same_predictions(reuse.predictions, full.predictions)
    for a, b in zip(full.curve("gold")[0], reuse.curve("gold")[0], strict=True):
        assert (a is None and b is None) or abs(a - b) <= 1e-6  # type: ignore[operator]


def test_diagnosis_keys_and_queries_equal_full_prompts(tiny: Any, prompts: al.PromptSet) -> None:
    full = collect_keys_queries(tiny, prompts, batch_size=3, prefix_cache=False)
    reuse = collect_keys_queries(tiny, prompts, batch_size=3)
    torch.testing.assert_close(reuse.keys, full.keys, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(reuse.queries, full.queries, atol=1e-5, rtol=1e-5)
    same_predictions(reuse.predictions, full.predictions)


@pytest.mark.parametrize("all_subtokens", [False, True])
def test_reweighting_training_and_evaluation_equal_full_prompts(
    tiny: Any, toy_task: al.Task, prompts: al.PromptSet, all_subtokens: bool
) -> None:
    kw: dict[str, Any] = dict(seed=42, aux_shots=2, epochs=2, all_subtokens=all_subtokens)
    full, log_full = al.train_reweighting(tiny, toy_task, prefix_cache=False, **kw)
    reuse, log_reuse = al.train_reweighting(tiny, toy_task, **kw)
    assert torch.count_nonzero(full.beta) > 0
    torch.testing.assert_close(reuse.beta, full.beta, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        torch.tensor(log_reuse.losses), torch.tensor(log_full.losses), atol=1e-5, rtol=1e-5
    )
    evaluated = full.predict(tiny, prompts, batch_size=3)
    same_predictions(evaluated, full.predict(tiny, prompts, batch_size=3, prefix_cache=False))
    assert kinds(tiny, prompts, fwd_hooks=full.hooks) == ["query"] * 3
    with full.applied(tiny):
        same_predictions(al.predict(tiny, prompts, batch_size=3), evaluated)


def test_different_demonstrations_fall_back_to_full_prompts(tiny: Any, toy_task: al.Task) -> None:
    mixed = al.build_prompts(tiny, toy_task, n=6, shots=1, seed=42, resample=True)
    assert shared_prefix(mixed) is None
    assert kinds(tiny, mixed) == ["full"] * 2  # silently: the full path is the right answer
    with pytest.warns(PrefixCacheFallback, match="do not share their demonstrations"):
        reuse = al.predict(tiny, mixed, batch_size=3, prefix_cache=True)
    same_predictions(reuse, al.predict(tiny, mixed, batch_size=3, prefix_cache=False))


def test_caller_hooks_see_full_prompts_unless_they_opt_in(tiny: Any, prompts: al.PromptSet) -> None:
    seen: list[tuple[int, ...]] = []

    def record(pattern: torch.Tensor, hook: Any) -> None:
        seen.append(tuple(pattern.shape))

    hooks = [("blocks.0.attn.hook_pattern", record)]
    assert kinds(tiny, prompts, fwd_hooks=hooks) == ["full"] * 3
    assert all(s[-1] == s[-2] for s in seen)  # whole prompts: query_pos == key_pos
    seen.clear()
    with tiny.hooks(fwd_hooks=hooks):  # attached before the call: the caller's too
        assert kinds(tiny, prompts) == ["full"] * 3
    seen.clear()
    assert kinds(tiny, prompts, fwd_hooks=hooks, prefix_cache=True) == ["query"] * 3
    n_demo = prompts[0].query_start
    assert seen[0] == (1, seen[0][1], n_demo, n_demo)  # the prefix, once
    assert all(s[-1] == n_demo + s[-2] for s in seen[1:])  # queries on its cache


def test_a_hook_that_fails_on_cached_shapes_names_prefix_cache(tiny: Any, prompts: al.PromptSet) -> None:
    n = len(prompts[0])

    def full_only(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
        return pattern * torch.ones(n, n)[None, None, : pattern.shape[-2], : pattern.shape[-1]].expand(
            1, 1, n, n
        )

    hooks = [("blocks.0.attn.hook_pattern", full_only)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        al.predict(tiny, prompts[:1], fwd_hooks=hooks)  # full prompts: fine
    with pytest.raises(AnchorlensError, match="prefix_cache"):
        al.predict(tiny, prompts[:1], fwd_hooks=hooks, prefix_cache=True)


@pytest.mark.parametrize("heads", ["sum", "abs"])
def test_saliency_with_fixed_demonstrations_equals_full_prompts(
    tiny: Any, prompts: al.PromptSet, heads: str
) -> None:
    full = al.saliency(tiny, prompts, batch_size=3, heads=heads, prefix_cache=False)
    reuse = al.saliency(tiny, prompts, batch_size=3, heads=heads, prefix_cache=True)
    for k, v in full.curves().items():
        torch.testing.assert_close(reuse.curves()[k], v, rtol=1e-4, atol=1e-9)
    for k in ("S_wp", "S_pq", "S_ww"):
        torch.testing.assert_close(getattr(reuse, k), getattr(full, k), rtol=1e-4, atol=1e-9)


def test_saliency_matrices_are_per_query_through_the_cache(tiny: Any, prompts: al.PromptSet) -> None:
    """The prefix's multipliers are shared by a batch; each query's gradient of them is its own."""
    full = al.saliency(tiny, prompts[:4], batch_size=4, keep="heads", prefix_cache=False)
    reuse = al.saliency(tiny, prompts[:4], batch_size=4, keep="heads", prefix_cache=True)
    assert full.matrices is not None and reuse.matrices is not None
    n_demo = prompts[0].query_start
    for a, b in zip(full.matrices, reuse.matrices, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    # the rows' prefix blocks differ (a summed gradient would make them equal)
    assert not torch.allclose(
        reuse.matrices[0][..., :n_demo, :n_demo], reuse.matrices[1][..., :n_demo, :n_demo]
    )


def test_saliency_with_resampled_demonstrations_runs_full_prompts(tiny: Any, toy_task: al.Task) -> None:
    mixed = al.build_prompts(tiny, toy_task, n=4, shots=1, seed=42, resample=True)
    with pytest.warns(PrefixCacheFallback):
        reuse = al.saliency(tiny, mixed, batch_size=2, prefix_cache=True)
    torch.testing.assert_close(reuse.S_pq, al.saliency(tiny, mixed, batch_size=2, prefix_cache=False).S_pq)


@pytest.mark.real
def test_smollm2_reuse_equals_full_prompts(smollm2: Any) -> None:
    prompts = al.build_prompts(smollm2, al.load_task("sst2"), n=6, shots=1, seed=42)
    full = al.predict(smollm2, prompts, batch_size=3, prefix_cache=False)
    same_predictions(al.predict(smollm2, prompts, batch_size=3), full)
    deep_full = al.deep(smollm2, prompts, batch_size=3, prefix_cache=False)
    torch.testing.assert_close(
        al.deep(smollm2, prompts, batch_size=3).attention, deep_full.attention, atol=1e-5, rtol=1e-4
    )
    sal_full = al.saliency(smollm2, prompts[:2], batch_size=2, prefix_cache=False)
    sal = al.saliency(smollm2, prompts[:2], batch_size=2, prefix_cache=True)
    for k, v in sal_full.curves().items():
        torch.testing.assert_close(sal.curves()[k], v, rtol=1e-4, atol=1e-10)
