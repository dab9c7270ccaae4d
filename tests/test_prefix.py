"""The prefix policy: the shared demonstrations run once, the queries on their key/value cache. Every
experiment gives the same result under ``"never"``, ``"auto"`` and ``"always"`` (on both tiny models), a
caller's hooks see the cached path only under ``"always"``, and a computation that needs full prompts
(random-word isolation) gets them under every policy."""

from __future__ import annotations

import dataclasses
import inspect
import math
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch

import anchorlens as al
from anchorlens.core.kvcache import prefix_batch, shared_prefix
from anchorlens.core.prefix import PrefixCacheFallback, check_policy, prefix_safe
from anchorlens.core.runner import LoopOptions, forward_batches
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.diagnosis.compute import collect_keys_queries
from anchorlens.experiments.reweighting.module import AnchorReweighting
from anchorlens.experiments.reweighting.table import table1
from anchorlens.experiments.reweighting.training import fit
from tests.conftest import make_toy_task

POLICIES = ("never", "auto", "always")


@pytest.fixture
def prompts(tiny: Any, toy_task: al.Task) -> al.PromptSet:
    return al.build_prompts(tiny, toy_task, n=8, shots=1, seed=42)


def kinds(model: Any, prompts: Any, **kw: Any) -> list[str]:
    with torch.no_grad():
        runs = forward_batches(model, prompts, options=LoopOptions(batch_size=3), **kw)
        return [b.kind for _, b, _ in runs]


def numbers(result: Any) -> list[Any]:
    """Every number of a result (tensors, floats, nested dataclasses and dicts), timings left out."""
    if isinstance(result, torch.Tensor):
        return [result.detach().double()]
    if isinstance(result, float | int | bool | str) or result is None:
        return [result]
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        skip = {
            "timings",
            "train_seconds",
            "cache_seconds",
            "speedup",
            "speedup_batched",
            "module",
            "seconds",
        }
        return [
            x
            for f in dataclasses.fields(result)
            if f.name not in skip
            for x in numbers(getattr(result, f.name))
        ]
    if isinstance(result, dict):
        return [x for k in sorted(result) for x in [k, *numbers(result[k])]]
    if isinstance(result, list | tuple):
        return [x for item in result for x in numbers(item)]
    return []


def assert_same(a: Any, b: Any, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    na, nb = numbers(a), numbers(b)
    assert len(na) == len(nb)
    for x, y in zip(na, nb, strict=True):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.shape == y.shape
            torch.testing.assert_close(x, y, atol=atol, rtol=rtol, equal_nan=True)
        elif isinstance(x, float) and not isinstance(x, bool):
            assert isinstance(y, float)
            assert (x != x and y != y) or math.isclose(x, y, rel_tol=rtol, abs_tol=atol), (x, y)
        else:
            assert x == y


def under_each_policy(run: Callable[[str], Any]) -> dict[str, Any]:
    """``run(policy)`` for every policy (the fallback warnings of ``"always"`` silenced: tested apart)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PrefixCacheFallback)
        return {p: run(p) for p in POLICIES}


def assert_policies_agree(run: Callable[[str], Any], atol: float = 1e-5, rtol: float = 1e-4) -> None:
    out = under_each_policy(run)
    assert_same(out["auto"], out["never"], atol, rtol)
    assert_same(out["always"], out["never"], atol, rtol)


# ------------------------------------------------------------------------------------------------
# Every experiment, under every policy, on both tiny models


def test_predict_policies_agree(tiny: Any, prompts: al.PromptSet) -> None:
    assert_policies_agree(lambda p: al.predict(tiny, prompts, batch_size=3, prefix=p))
    assert_policies_agree(lambda p: al.predict(tiny, prompts, batch_size=3, padding_side="left", prefix=p))


@pytest.mark.parametrize("anchors", ["label", "random"])
def test_isolation_policies_agree(tiny: Any, prompts: al.PromptSet, anchors: str) -> None:
    """Random words differ per prompt: ``"always"`` once cut every prompt at prompt 0's random words (the
    cached prefix) and none of the queries' own; the policies must agree."""
    assert_policies_agree(
        lambda p: al.isolation(tiny, prompts, ks=(1,), anchors=(anchors,), batch_size=3, prefix=p)
    )


def test_isolate_as_caller_hooks_policies_agree(tiny: Any, prompts: al.PromptSet) -> None:
    for anchors in ("label", "random"):
        cut = al.isolate(prompts, [0], anchors=anchors)
        assert_policies_agree(
            lambda p, cut=cut: al.predict(tiny, prompts, fwd_hooks=cut, batch_size=3, prefix=p)
        )
        assert_policies_agree(
            lambda p, cut=cut: al.deep(tiny, prompts, fwd_hooks=cut, batch_size=3, prefix=p)
        )


@pytest.mark.parametrize("heads", ["sum", "abs"])
def test_saliency_with_fixed_demonstrations_policies_agree(
    tiny: Any, prompts: al.PromptSet, heads: str
) -> None:
    assert_policies_agree(
        lambda p: al.saliency(tiny, prompts, batch_size=3, heads=heads, prefix=p), atol=1e-9, rtol=1e-4
    )


def test_saliency_matrices_are_per_query_through_the_cache(tiny: Any, prompts: al.PromptSet) -> None:
    """The prefix's multipliers are shared by a batch; each query's gradient of them is its own."""
    full = al.saliency(tiny, prompts[:4], batch_size=4, keep="heads", prefix="never")
    reuse = al.saliency(tiny, prompts[:4], batch_size=4, keep="heads", prefix="always")
    assert full.matrices is not None and reuse.matrices is not None
    n_demo = prompts[0].query_start
    for a, b in zip(full.matrices, reuse.matrices, strict=True):
        assert a.shape == b.shape
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)
    # the rows' prefix blocks differ (a summed gradient would make them equal)
    assert not torch.allclose(
        reuse.matrices[0][..., :n_demo, :n_demo], reuse.matrices[1][..., :n_demo, :n_demo]
    )
    left = al.saliency(tiny, prompts[:4], batch_size=4, keep="heads", padding_side="left", prefix="always")
    assert left.matrices is not None
    for a, b in zip(full.matrices, left.matrices, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-7)


def test_deep_policies_agree(tiny: Any, prompts: al.PromptSet) -> None:
    assert_policies_agree(lambda p: al.deep(tiny, prompts, batch_size=3, prefix=p), atol=1e-6)


def test_diagnosis_policies_agree(tiny: Any) -> None:
    task = make_toy_task(
        name="three",
        label_words=(" Negative", " Positive", " good"),
        train=(*make_toy_task().train, al.Example("it was good", 2), al.Example("good and good", 2)),
        test=(*make_toy_task().test, al.Example("a good film yes", 2), al.Example("good good yes", 2)),
    )
    ps = al.build_prompts(tiny, task, n=9, shots=1, seed=0)
    assert_policies_agree(lambda p: collect_keys_queries(tiny, ps, batch_size=3, prefix=p))
    assert_policies_agree(lambda p: al.diagnose(tiny, ps, n_components=2, batch_size=3, prefix=p))


def test_compression_policies_agree(tiny: Any, prompts: al.PromptSet) -> None:
    assert_policies_agree(
        lambda p: al.compression(tiny, prompts, n_random_top=2, timing=False, batch_size=3, prefix=p)
    )


@pytest.mark.parametrize("all_subtokens", [False, True])
def test_reweighting_training_and_evaluation_policies_agree(
    tiny: Any, toy_task: al.Task, prompts: al.PromptSet, all_subtokens: bool
) -> None:
    kw: dict[str, Any] = dict(seed=42, aux_shots=2, epochs=2, all_subtokens=all_subtokens)
    trained = under_each_policy(lambda p: al.train_reweighting(tiny, toy_task, prefix=p, **kw))
    module = trained["never"][0]
    assert torch.count_nonzero(module.beta) > 0
    for p in ("auto", "always"):
        torch.testing.assert_close(trained[p][0].beta, module.beta, atol=1e-5, rtol=1e-4)
        assert_same(trained[p][1].losses, trained["never"][1].losses)
    assert_policies_agree(lambda p: module.predict(tiny, prompts, batch_size=3, prefix=p))
    assert kinds(tiny, prompts, own_hooks=module.hooks) == ["query"] * 3
    evaluated = module.predict(tiny, prompts, batch_size=3, prefix="never")
    with module.applied(tiny):  # its hooks are anchorlens' own: "auto" keeps the reuse
        assert kinds(tiny, prompts) == ["query"] * 3
        assert_same(al.predict(tiny, prompts, batch_size=3), evaluated)


def test_fit_policies_agree(tiny: Any, toy_task: al.Task, prompts: al.PromptSet) -> None:
    def train(policy: str) -> torch.Tensor:
        module = AnchorReweighting.for_model(tiny, toy_task, prompts.demonstrations.demos)  # type: ignore[union-attr]
        fit(module, tiny, prompts[:4], epochs=1, lr=0.05, batch_size=2, prefix=policy)  # type: ignore[arg-type]
        return module.beta.detach()

    assert_policies_agree(train)


def test_table1_policies_agree(gpt2_like: Any, toy_task: al.Task) -> None:
    kw: dict[str, Any] = dict(n=4, seed=0, many_shots=2, aux_shots=2, epochs=1)
    assert_policies_agree(lambda p: table1(gpt2_like, toy_task, prefix=p, **kw))


# ------------------------------------------------------------------------------------------------
# What the loop runs under each policy


def test_the_loop_runs_queries_on_the_cache(tiny: Any, prompts: al.PromptSet) -> None:
    assert shared_prefix(prompts) == prompts[0].tokens[: prompts[0].query_start]
    assert kinds(tiny, prompts) == ["query"] * 3
    assert kinds(tiny, prompts, prefix="always") == ["query"] * 3
    assert kinds(tiny, prompts, prefix="never") == ["full"] * 3


def test_the_experiment_declares_its_consent(tiny: Any, prompts: al.PromptSet) -> None:
    """Own hooks without the prefix_safe mark run full prompts under every policy (``"always"`` warns)."""

    def own(batch: al.PromptBatch) -> list[Any]:
        return []

    assert kinds(tiny, prompts, own_hooks=own) == ["full"] * 3
    with pytest.warns(PrefixCacheFallback, match="needs full prompts"):
        assert kinds(tiny, prompts, own_hooks=own, prefix="always") == ["full"] * 3
    assert kinds(tiny, prompts, own_hooks=prefix_safe(own)) == ["query"] * 3


def test_random_word_isolation_never_sees_a_cached_prefix(tiny: Any, prompts: al.PromptSet) -> None:
    label, random = al.isolate(prompts, [0]), al.isolate(prompts, [0], anchors="random")
    assert kinds(tiny, prompts, fwd_hooks=label) == ["query"] * 3
    assert kinds(tiny, prompts, fwd_hooks=random) == ["full"] * 3
    with pytest.warns(PrefixCacheFallback, match="random-word isolation"):
        assert kinds(tiny, prompts, fwd_hooks=random, prefix="always") == ["full"] * 3
    with pytest.warns(PrefixCacheFallback, match="needs full prompts"):
        al.isolation(tiny, prompts, ks=(1,), anchors=("random",), layer_sets=("first",), prefix="always")
    with pytest.raises(AnchorlensError, match="needs full prompts"):  # even if a loop did call it so
        random(prefix_batch(prompts[0], "cpu"))


def test_different_demonstrations_fall_back_to_full_prompts(tiny: Any, toy_task: al.Task) -> None:
    mixed = al.build_prompts(tiny, toy_task, n=6, shots=1, seed=42, resample=True)
    assert shared_prefix(mixed) is None
    assert kinds(tiny, mixed) == ["full"] * 2  # silently: the full path is the right answer
    with pytest.warns(PrefixCacheFallback, match="do not share their demonstrations"):
        reuse = al.predict(tiny, mixed, batch_size=3, prefix="always")
    assert_same(reuse, al.predict(tiny, mixed, batch_size=3, prefix="never"))
    with pytest.warns(PrefixCacheFallback):
        sal = al.saliency(tiny, mixed[:4], batch_size=2, prefix="always")
    assert_same(sal, al.saliency(tiny, mixed[:4], batch_size=2, prefix="never"), atol=1e-9)


def test_caller_hooks_see_full_prompts_unless_always(tiny: Any, prompts: al.PromptSet) -> None:
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
    assert kinds(tiny, prompts, fwd_hooks=hooks, prefix="always") == ["query"] * 3
    n_demo = prompts[0].query_start
    assert seen[0] == (1, seen[0][1], n_demo, n_demo)  # the prefix, once
    assert all(s[-1] == n_demo + s[-2] for s in seen[1:])  # queries on its cache


def test_a_hook_that_fails_on_cached_shapes_names_the_policy(tiny: Any, prompts: al.PromptSet) -> None:
    n = len(prompts[0])

    def full_only(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
        return pattern * torch.ones(n, n)[None, None, : pattern.shape[-2], : pattern.shape[-1]].expand(
            1, 1, n, n
        )

    hooks = [("blocks.0.attn.hook_pattern", full_only)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        al.predict(tiny, prompts[:1], fwd_hooks=hooks)  # full prompts: fine
    with pytest.raises(AnchorlensError, match="prefix='always'"):
        al.predict(tiny, prompts[:1], fwd_hooks=hooks, prefix="always")


def test_bad_policies_are_refused(gpt2_like: Any, toy_task: al.Task) -> None:
    for bad in (True, False, None, "yes"):
        with pytest.raises(AnchorlensError, match="'never', 'auto' or 'always'"):
            check_policy(bad)
    with pytest.raises(AnchorlensError, match="prefix_cache=True is now prefix='always'"):
        check_policy(True)
    ps = al.build_prompts(gpt2_like, toy_task, n=2, shots=1, seed=0)
    # the tests check annotations at run time (beartype) before anchorlens' own check would run
    with pytest.raises((AnchorlensError, TypeError)):
        al.predict(gpt2_like, ps, prefix="yes")  # type: ignore[arg-type]


def test_the_loop_takes_at_most_eight_parameters() -> None:
    assert len(inspect.signature(forward_batches).parameters) <= 8


@pytest.mark.real
def test_smollm2_policies_agree(smollm2: Any) -> None:
    prompts = al.build_prompts(smollm2, al.load_task("sst2"), n=6, shots=1, seed=42)
    assert_policies_agree(lambda p: al.predict(smollm2, prompts, batch_size=3, prefix=p), atol=1e-4)
    assert_policies_agree(lambda p: al.deep(smollm2, prompts, batch_size=3, prefix=p), atol=1e-5)
    assert_policies_agree(
        lambda p: al.isolation(smollm2, prompts, ks=(3,), batch_size=3, prefix=p), atol=1e-4
    )
    sal_full = al.saliency(smollm2, prompts[:2], batch_size=2, prefix="never")
    sal = al.saliency(smollm2, prompts[:2], batch_size=2, prefix="always")
    for k, v in sal_full.curves().items():
        torch.testing.assert_close(sal.curves()[k], v, rtol=1e-4, atol=1e-10)
