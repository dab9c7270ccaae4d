"""The hook contract: every experiment x every kind of caller hook, on both tiny architectures.

Each experiment runs with no hooks, a plain TransformerLens hook list, a batch-dependent callable,
re-weighting's hooks and label-word isolation's hooks; every non-identity hook must change the result and
an identity hook must leave it bit-identical. Plus the order of hooks at one hook point, and bad hooks.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

import anchorlens as al
from anchorlens.experiments.reweighting import AnchorReweighting
from tests.conftest import make_toy_task

THREE = (" Negative", " Positive", " good")


def three_class_task() -> al.Task:
    """Diagnosis needs three classes for a defined Spearman agreement; the toy task's words suffice."""
    base = make_toy_task()
    train = [*base.train, al.Example("it was good", 2), al.Example("good and good", 2)]
    test = [*base.test, al.Example("a good film yes", 2), al.Example("good good yes", 2)]
    return make_toy_task(name="three", label_words=THREE, train=tuple(train), test=tuple(test))


def run_experiment(name: str, model: Any, prompts: al.PromptSet, hooks: Any) -> Any:
    """One experiment with the caller's ``hooks``; small settings so the matrix stays fast."""
    if name == "predict":
        return al.predict(model, prompts, fwd_hooks=hooks, batch_size=3)
    if name == "saliency":
        return al.saliency(model, prompts, fwd_hooks=hooks, batch_size=3)
    if name == "isolation":
        return al.isolation(model, prompts, fwd_hooks=hooks, ks=(1,), batch_size=3)
    if name == "deep":
        return al.deep(model, prompts, fwd_hooks=hooks, batch_size=3)
    if name == "diagnose":
        return al.diagnose(model, prompts, fwd_hooks=hooks, n_components=2, batch_size=3)
    if name == "compression":
        return al.compression(model, prompts, fwd_hooks=hooks, n_random_top=1, timing=False, batch_size=3)
    if name == "reweighting":
        return al.table1(
            model, prompts.task, n=4, seed=0, many_shots=2, aux_shots=2, epochs=1, fwd_hooks=hooks
        )
    raise KeyError(name)


def fingerprint(result: Any) -> list[Any]:
    """Every number of a result (tensors, floats, nested dataclasses), timings and seconds left out."""
    if isinstance(result, torch.Tensor):
        return [result.detach().double()]
    if isinstance(result, float | int | bool) or result is None or isinstance(result, str):
        return [result]
    if dataclasses.is_dataclass(result) and not isinstance(result, type):
        skip = {"timings", "train_seconds", "cache_seconds", "speedup", "speedup_batched", "module"}
        return [
            x
            for f in dataclasses.fields(result)
            if f.name not in skip
            for x in fingerprint(getattr(result, f.name))
        ]
    if isinstance(result, dict):
        return [x for k in sorted(result) for x in [k, *fingerprint(result[k])]]
    if isinstance(result, list | tuple):
        return [x for item in result for x in fingerprint(item)]
    return []


def same(a: Any, b: Any) -> bool:
    """Equal up to float rounding: without hooks the experiments run the queries on the demonstrations'
    key/value cache, with a caller's (not prefix-aware) hooks the full prompts, which differ in the last bits."""
    fa, fb = fingerprint(a), fingerprint(b)
    if len(fa) != len(fb):
        return False
    for x, y in zip(fa, fb, strict=True):
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            if x.shape != y.shape or not torch.allclose(x, y, rtol=1e-5, atol=1e-6, equal_nan=True):
                return False
        elif isinstance(x, float) and isinstance(y, float):
            if not (math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-7) or (x != x and y != y)):
                return False
        elif x != y:
            return False
    return True


def hook_kinds(model: Any, prompts: al.PromptSet) -> dict[str, Any]:
    """The caller hooks of the matrix: name -> fwd_hooks."""
    module = AnchorReweighting.for_model(model, prompts.task, prompts.demonstrations.demos)  # type: ignore[union-attr]
    with torch.no_grad():
        module.beta.copy_(torch.randn(module.beta.shape, generator=torch.Generator().manual_seed(0)))

    def zero_head0(z: torch.Tensor, hook: Any) -> torch.Tensor:
        z = z.clone()
        z[:, :, 0] = 0
        return z

    def per_batch(batch: al.PromptBatch) -> list[tuple[str, Callable[..., Any]]]:
        rows = torch.arange(len(batch))

        def bump(resid: torch.Tensor, hook: Any) -> torch.Tensor:
            resid = resid.clone()
            target = batch.target.clamp(max=resid.shape[1] - 1)
            # not a constant: LayerNorm would centre a constant away
            resid[rows, target] += torch.linspace(-3.0, 3.0, resid.shape[-1])
            return resid

        assert all(0 <= i < len(prompts) for i in batch.indices)
        return [("blocks.0.hook_resid_post", bump)]

    return {
        "plain list": [("blocks.0.attn.hook_z", zero_head0)],
        "batch callable": per_batch,
        "re-weighting": module.hooks,
        "label isolation": al.isolate(prompts, [0]),
    }


EXPERIMENTS = ("predict", "saliency", "isolation", "deep", "diagnose", "compression", "reweighting")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_composition_matrix(tiny: Any, experiment: str) -> None:
    task = three_class_task() if experiment == "diagnose" else make_toy_task()
    n = {"diagnose": None, "reweighting": 4}.get(experiment, 6)
    prompts = al.build_prompts(tiny, task, n=n, shots=1, seed=0)
    plain = run_experiment(experiment, tiny, prompts, None)
    identity = [
        ("blocks.0.attn.hook_pattern", lambda x, hook: x),
        ("blocks.1.hook_resid_pre", lambda x, hook: None),
    ]
    assert same(run_experiment(experiment, tiny, prompts, identity), plain), (
        "identity hooks changed the result"
    )
    assert same(run_experiment(experiment, tiny, prompts, lambda batch: identity), plain)
    for kind, hooks in hook_kinds(tiny, prompts).items():
        result = run_experiment(experiment, tiny, prompts, hooks)
        assert not same(result, plain), f"{kind} hooks did not change {experiment}"
        assert not any(hp.fwd_hooks for hp in tiny.hook_dict.values()), "a hook stayed attached"


def test_caller_hooks_run_before_anchorlens_hooks(gpt2_like: Any, toy_task: al.Task) -> None:
    """At one hook point the caller's hook sees the raw pattern and anchorlens' capture sees its output."""
    prompts = al.build_prompts(gpt2_like, toy_task, n=3, shots=1, seed=0)
    order: list[str] = []

    def caller(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
        order.append("caller")
        return torch.zeros_like(pattern)

    def own(batch: al.PromptBatch) -> list[Any]:
        def anchorlens_hook(pattern: torch.Tensor, hook: Any) -> None:
            order.append("anchorlens")
            assert bool((pattern == 0).all()), "anchorlens' hook did not see the caller's output"

        return [("blocks.0.attn.hook_pattern", anchorlens_hook)]

    with torch.no_grad():
        list(
            al.forward_batches(
                gpt2_like, prompts, fwd_hooks=[("blocks.0.attn.hook_pattern", caller)], own_hooks=own
            )
        )
    assert order == ["caller", "anchorlens"] * 1
    # deep reads the attention the caller left: all zero
    dl = al.deep(gpt2_like, prompts, fwd_hooks=[("blocks.0.attn.hook_pattern", caller)])
    assert bool((dl.attention[:, 0] == 0).all()) and bool((dl.attention[:, 1] != 0).any())


def test_batch_callable_gets_indices_into_the_full_set(gpt2_like: Any, toy_task: al.Task) -> None:
    prompts = al.build_prompts(gpt2_like, toy_task, n=7, shots=1, seed=0)
    seen: list[int] = []

    def hooks(batch: al.PromptBatch) -> list[Any]:
        for i, p in zip(batch.indices, batch.prompts, strict=True):
            assert prompts[i] is p
        seen.extend(batch.indices)
        return []

    al.predict(gpt2_like, prompts, fwd_hooks=hooks, batch_size=3)
    assert sorted(seen) == list(range(7))


def test_unknown_hook_name_is_refused_before_any_forward(gpt2_like: Any, toy_task: al.Task) -> None:
    prompts = al.build_prompts(gpt2_like, toy_task, n=2, shots=1, seed=0)
    calls: list[int] = []
    with gpt2_like.hooks(fwd_hooks=[("hook_embed", lambda x, hook: calls.append(1))]):
        for run in (al.predict, al.saliency, al.deep):
            with pytest.raises(
                al.AnchorlensError,
                match=r"no hook point 'blocks\.0\.attn\.hook_patern'.*'blocks\.0\.attn\.hook_pattern'",
            ):
                run(gpt2_like, prompts, fwd_hooks=[("blocks.0.attn.hook_patern", lambda x, hook: None)])
    assert calls == [], "a forward pass ran before the bad hook name was refused"


@pytest.mark.parametrize(
    "bad", [None, "blocks.0.hook_resid_pre", [("blocks.0.hook_resid_pre",)], [(0, print)], {"a": 1}]
)
def test_callable_returning_something_else_is_refused(gpt2_like: Any, toy_task: al.Task, bad: Any) -> None:
    prompts = al.build_prompts(gpt2_like, toy_task, n=2, shots=1, seed=0)
    with pytest.raises(al.AnchorlensError, match=r"fwd_hooks function's return value must"):
        al.predict(gpt2_like, prompts, fwd_hooks=lambda batch: bad)
    with pytest.raises(al.AnchorlensError, match=r"fwd_hooks"):
        al.isolation(gpt2_like, prompts, ks=(1,), fwd_hooks=lambda batch: bad)


def test_applied_reweights_any_analysis_and_plain_calls(tiny: Any, toy_task: al.Task) -> None:
    prompts = al.build_prompts(tiny, toy_task, n=4, shots=1, seed=0)
    module = AnchorReweighting.for_model(tiny, toy_task, prompts.demonstrations.demos)  # type: ignore[union-attr]
    with torch.no_grad():
        module.beta.copy_(torch.randn(module.beta.shape, generator=torch.Generator().manual_seed(1)))
    hooked = al.deep(tiny, prompts, fwd_hooks=module.hooks)
    with module.applied(tiny, prompts[0]):
        inside = al.deep(tiny, prompts)
        _, cache = tiny.run_with_cache(torch.tensor([prompts[0].tokens]))
    torch.testing.assert_close(inside.attention, hooked.attention)
    assert not any(hp.fwd_hooks for hp in tiny.hook_dict.values())
    # A plain run_with_cache inside equals the experiment's view of prompt 0.
    p = prompts[0]
    from_cache = cache["pattern", 1][0, :, p.target, list(p.label_positions)].sum(0)
    one = al.deep(tiny, prompts[:1], fwd_hooks=module.hooks)
    torch.testing.assert_close(from_cache.sum(), one.attention[0, 1].sum())
    with module.applied(tiny), pytest.raises(al.AnchorlensError, match="applied\\(model, prompts\\[0\\]\\)"):
        tiny(torch.tensor([prompts[0].tokens]))
    assert not any(hp.fwd_hooks for hp in tiny.hook_dict.values()), "applied() leaked a hook after an error"


def test_applied_refuses_a_model_of_another_shape(gpt2_like: Any, toy_task: al.Task) -> None:
    prompts = al.build_prompts(gpt2_like, toy_task, n=2, shots=1, seed=0)
    module = AnchorReweighting.for_model(gpt2_like, toy_task, prompts.demonstrations.demos)  # type: ignore[union-attr]
    other = al.tiny_model(n_layers=3, positional_embedding_type="standard", seed=1)
    with (
        pytest.raises(
            al.AnchorlensError,
            match=r"applied\(\): this beta was made for another model: .*n_layers: 2 there, 3 here",
        ),
        module.applied(other),
    ):
        pass


def test_prompt_set_slices_are_prompt_sets(gpt2_like: Any, toy_task: al.Task) -> None:
    prompts = al.build_prompts(gpt2_like, toy_task, n=6, shots=1, seed=0)
    for part in (prompts[:3], prompts[[0, 2, 4]], prompts[1::2]):
        assert isinstance(part, al.PromptSet)
        assert part.task is prompts.task and part.demonstrations is prompts.demonstrations
    assert isinstance(prompts[0], al.IclPrompt)
    assert prompts[[5, 1]].prompts == (prompts[5], prompts[1])
    result = al.compression(gpt2_like, prompts[:3], n_random_top=1, timing=False)
    assert result.methods["full"]["label_loyalty"] == 1.0


def test_saliency_under_label_isolation_has_no_text_to_label_flow(tiny: Any, toy_task: al.Task) -> None:
    """Cut every edge into the label words in layer 0: S_wp there is exactly 0 (in the last layer it is 0
    anyway: only the target's row reaches the logits)."""
    prompts = al.build_prompts(tiny, toy_task, n=4, shots=1, seed=0, resample=True)
    cut = al.saliency(tiny, prompts, fwd_hooks=al.isolate(prompts, [0]))
    assert bool((cut.S_wp[:, 0] == 0).all()) and bool((cut.S_pq[:, 0] > 0).all())
    assert bool((al.saliency(tiny, prompts).S_wp[:, 0] > 0).all())


@pytest.mark.parametrize("per_head", [False, True])
def test_saliency_tap_equals_the_multiplier(gpt2_like: Any, toy_task: al.Task, per_head: bool) -> None:
    """The lean path's tap (identity forward, ``A * dL/dA`` stored in the backward pass) gives the
    multiplier's gradient, summed over heads or per head, and passes the gradient on unchanged."""
    from anchorlens.core.hooks import gradient_multiplier_hooks, saliency_tap_hooks

    batch = torch.tensor([al.build_prompts(gpt2_like, toy_task, n=2)[0].tokens])
    layers = list(range(gpt2_like.cfg.n_layers))
    taps: dict[int, torch.Tensor] = {}
    ones: dict[int, torch.Tensor] = {}
    with torch.enable_grad():
        embed = gpt2_like.embed(batch).detach().requires_grad_(True)
        hook = ("hook_embed", lambda x, hook: embed)
        with gpt2_like.hooks(fwd_hooks=[hook, *saliency_tap_hooks(layers, taps, per_head)]):
            (tap_x,) = torch.autograd.grad(gpt2_like(batch)[0, -1, 0], [embed])
        with gpt2_like.hooks(fwd_hooks=[hook, *gradient_multiplier_hooks(layers, ones, per_head)]):
            *mult, mult_x = torch.autograd.grad(
                gpt2_like(batch)[0, -1, 0], [ones[x] for x in layers] + [embed]
            )
    for layer, expected in zip(layers, mult, strict=True):
        torch.testing.assert_close(taps[layer], expected, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(tap_x, mult_x)
