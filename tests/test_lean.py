"""The lean saliency path (one layer at a time, ``anchorlens.core.lean``) gives the exact path's numbers on
both front-ends, under every kind of hook; its refusals; what a stateful hook sees."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

import anchorlens as al
from anchorlens.core import lean
from anchorlens.core.hooks import pattern_name
from anchorlens.experiments.faithfulness.compute import faithfulness
from anchorlens.spans import discover, span_flow, span_prompt

from .conftest import make_toy_task

TEXT = "Review: a good movie\nSentiment: Positive\nReview: a bad film\nSentiment:"
SPANS = {"demo": " a good movie", "label": " Positive", "query": " a bad film"}
TINY = {
    "gpt2_hooked": dict(positional_embedding_type="standard", seed=1),
    "llama_hooked": dict(positional_embedding_type="rotary", n_key_value_heads=2, seed=2),
    "gpt2_bridge": dict(positional_embedding_type="standard", seed=1, backend="bridge"),
    "llama_bridge": dict(positional_embedding_type="rotary", n_key_value_heads=2, seed=2, backend="bridge"),
}
FLOWS = ("S_wp", "S_pq", "S_ww")


@pytest.fixture(scope="module", params=list(TINY))
def model(request: pytest.FixtureRequest) -> Any:
    """The four tiny models: GPT-2-like and Llama-like, HookedTransformer and TransformerBridge."""
    return al.tiny_model(n_layers=3, **TINY[request.param])  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def prompts(model: Any) -> Any:
    return al.build_prompts(model, make_toy_task(), n=5, shots=1, seed=5, resample=True)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest relative difference; an entry below a hundredth of the flow's largest is compared at that
    floor (a flow that sums terms of both signs can be near 0, where float32 sums in another order differ by
    ~3e-9 absolute: 2e-5 relative on a 1.4e-4 entry of a flow whose largest is 0.07, 4e-8 of the curve)."""
    floor = max(1e-2 * float(b.abs().max()), 1e-12)
    return float(((a - b).abs() / b.abs().clamp_min(floor)).max())


def assert_same_flows(lean_res: Any, exact: Any, tol: float = 1e-5) -> None:
    for flow in FLOWS:
        assert rel(getattr(lean_res, flow), getattr(exact, flow)) < tol, flow


def both(fn: Callable[[str], Any]) -> tuple[Any, Any]:
    return fn("lean"), fn("exact")


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("heads", ["sum", "abs"])
def test_saliency_lean_equals_exact(model: Any, prompts: Any, side: str, heads: str) -> None:
    lean_res, exact = both(
        lambda m: al.saliency(model, prompts, batch_size=3, heads=heads, padding_side=side, memory=m)  # type: ignore[arg-type]
    )
    assert_same_flows(lean_res, exact)
    assert all(p.grad is None and p.requires_grad for p in model.parameters())
    assert all(not hp.fwd_hooks for hp in model.hook_dict.values())


@pytest.mark.parametrize("keep", ["layers", "heads"])
def test_kept_matrices_come_from_disk_one_layer_at_a_time(
    model: Any, prompts: Any, keep: str, tmp_path: Any
) -> None:
    exact = al.saliency(model, prompts[:3], batch_size=2, keep=keep, memory="exact")
    lean_res = al.saliency(model, prompts[:3], batch_size=2, keep=keep, memory="lean", keep_dir=tmp_path)
    assert exact.matrices is not None and lean_res.matrices is not None
    for i, (a, b) in enumerate(zip(lean_res.matrices, exact.matrices, strict=True)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        on_disk = np.load(tmp_path / f"saliency_{i}.npy")
        assert on_disk.shape == tuple(b.shape) and np.allclose(on_disk, b.numpy(), rtol=1e-5, atol=1e-7)
    temporary = al.saliency(model, prompts[:1], keep=keep, memory="lean")  # no folder: a temporary one
    assert temporary.matrices is not None
    torch.testing.assert_close(temporary.matrices[0], exact.matrices[0], rtol=1e-5, atol=1e-7)


def _scale_head0(pattern: torch.Tensor, hook: Any) -> torch.Tensor:
    return pattern * torch.tensor([0.5, *[1.0] * (pattern.shape[1] - 1)])[:, None, None]


def test_lean_equals_exact_under_caller_hooks_and_isolation(model: Any, prompts: Any) -> None:
    names = [pattern_name(layer) for layer in range(model.cfg.n_layers)]
    plain = al.saliency(model, prompts, batch_size=3, memory="exact")
    for hooks in (
        [(n, _scale_head0) for n in names],
        al.isolate(prompts, range(2)),
        al.isolate(prompts, [1], mode="post"),
    ):
        lean_res, exact = both(lambda m: al.saliency(model, prompts, batch_size=3, fwd_hooks=hooks, memory=m))  # noqa: B023
        assert_same_flows(lean_res, exact)
        assert max(rel(getattr(exact, f), getattr(plain, f)) for f in FLOWS) > 1e-3  # the hooks mattered
    # a function of the batch, which needs each row's positions: left padding shifts them
    lean_res, exact = both(
        lambda m: al.saliency(
            model, prompts, batch_size=3, padding_side="left", fwd_hooks=al.isolate(prompts, [0]), memory=m
        )
    )
    assert_same_flows(lean_res, exact)


def test_lean_equals_exact_under_reweighting(model: Any, prompts: Any) -> None:
    module = al.AnchorReweighting(model.cfg.n_layers, model.cfg.n_heads, 2)
    with torch.no_grad():
        module.beta.copy_(torch.randn(module.beta.shape, generator=torch.Generator().manual_seed(0)))
    lean_res, exact = both(
        lambda m: al.saliency(model, prompts, batch_size=3, fwd_hooks=module.hooks, memory=m)
    )
    assert_same_flows(lean_res, exact)
    with module.applied(model):  # attached before the call: current_batch() in the replay too
        lean_res, applied = both(lambda m: al.saliency(model, prompts, batch_size=3, memory=m))
    assert_same_flows(lean_res, applied)
    assert_same_flows(applied, exact)
    assert module.beta.grad is None


def _span_prompts(model: Any) -> list[Any]:
    return [  # two target tokens in the first: the loss reads the final residual's rows
        span_prompt(model, TEXT, SPANS, target=" Negative yes"),
        span_prompt(model, TEXT + " a", SPANS, target=" Positive"),
    ]


@pytest.mark.parametrize("heads", ["sum", "abs"])
def test_span_flow_lean_equals_exact(model: Any, heads: str) -> None:
    ps = _span_prompts(model)
    hooks = [(pattern_name(1), _scale_head0)]
    lean_res, exact = both(lambda m: span_flow(model, ps, heads=heads, keep=True, fwd_hooks=hooks, memory=m))
    assert rel(lean_res.total, exact.total) < 1e-5 and torch.equal(lean_res.pairs, exact.pairs)
    for a, b in zip(lean_res.matrices, exact.matrices, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_discover_and_faithfulness_lean_equal_exact(model: Any, prompts: Any) -> None:
    ps = al.build_prompts(model, make_toy_task(), n=4, shots=1, seed=3)
    lean_res, exact = both(lambda m: discover(model, ps, k=2, confirm=0, memory=m))
    assert [e["token"] for e in lean_res.ranking] == [e["token"] for e in exact.ranking]
    got = torch.tensor([e["score"] for e in lean_res.ranking])
    assert rel(got, torch.tensor([e["score"] for e in exact.ranking])) < 1e-5
    lean_res, exact = both(lambda m: faithfulness(model, prompts[:3], steps=1, layers=[1, 2], memory=m))
    torch.testing.assert_close(lean_res.predicted, exact.predicted, rtol=1e-5, atol=1e-7)
    assert lean_res.loss == pytest.approx(exact.loss, rel=1e-6)


def test_sae_applies_on_the_lean_path() -> None:
    from .test_sae import HOOK, random_sae, sae_twin

    plain = al.tiny_model(n_layers=4, positional_embedding_type="rotary", n_key_value_heads=2, seed=2)
    sae_model = sae_twin(plain)
    ps = al.build_prompts(sae_model, make_toy_task(), n=3, shots=1, seed=0)
    sae = random_sae(sae_model.cfg.d_model)
    with sae_model.saes(saes=[sae], use_error_term=False):
        assert HOOK in sae_model.acts_to_saes
        lean_res, exact = both(lambda m: al.saliency(sae_model, ps, batch_size=3, memory=m))
    assert_same_flows(lean_res, exact)
    assert rel(exact.S_ww, al.saliency(plain, ps, batch_size=3).S_ww) > 1e-3  # the SAE changed the flows
    assert all(p.grad is None for p in sae.parameters())


# ------------------------------------------------------------------------------------------------
# What a stateful hook sees


def test_a_stateful_hook_runs_twice_in_its_layer_once_before_the_blocks() -> None:
    """Inside block l: once in the capture pass (grad off, layers in order) and once in the replay of
    layer l (grad on, layers from the last down); hook_embed once; a function of the batch once per batch."""
    model = al.tiny_model(n_layers=3, seed=1)
    ps = al.build_prompts(model, make_toy_task(), n=4, shots=1, seed=5, resample=True)
    seen: list[tuple[str, bool]] = []
    batches: list[int] = []

    def record(x: torch.Tensor, hook: Any) -> None:
        seen.append((hook.name, torch.is_grad_enabled()))

    names = ["hook_embed", *(pattern_name(layer) for layer in range(3))]

    def per_batch(batch: al.PromptBatch) -> list[Any]:
        batches.append(len(batch))
        return [(n, record) for n in names]

    al.saliency(model, ps, batch_size=2, fwd_hooks=per_batch, memory="exact")
    assert batches == [2, 2] and len(seen) == 8  # each hook once per batch
    assert all(grad for _, grad in seen)  # the exact path's one forward pass has grad on
    seen.clear()
    batches.clear()
    al.saliency(model, ps, batch_size=2, fwd_hooks=per_batch, memory="lean")
    assert batches == [2, 2]
    capture = [("hook_embed", False), *((pattern_name(layer), False) for layer in range(3))]
    replay = [(pattern_name(layer), True) for layer in (2, 1, 0)]
    assert seen == (capture + replay) * 2


def test_a_hook_that_changes_between_calls_is_caught() -> None:
    model = al.tiny_model(n_layers=2, seed=1)
    ps = al.build_prompts(model, make_toy_task(), n=2, shots=1, seed=5)
    calls = [0]

    def drift(resid: torch.Tensor, hook: Any) -> torch.Tensor:
        calls[0] += 1
        # a different edit every call (not a constant shift, which LayerNorm would take out again)
        return resid + calls[0] * torch.linspace(-1, 1, resid.shape[-1])

    with pytest.raises(al.AnchorlensError, match="runs again"):
        al.saliency(model, ps, fwd_hooks=[("blocks.1.hook_resid_post", drift)], memory="lean")


# ------------------------------------------------------------------------------------------------
# Refusals


def _count_forwards(model: Any) -> tuple[list[int], Any]:
    calls: list[int] = []
    return calls, model.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))


def test_bad_inputs_are_refused_before_any_forward_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    model = al.tiny_model(n_layers=2, seed=1)
    ps = al.build_prompts(model, make_toy_task(), n=2, shots=1, seed=5)
    sps = _span_prompts(model)
    calls, handle = _count_forwards(model)
    try:
        with pytest.raises(al.AnchorlensError, match="memory must be"):
            al.saliency(model, ps, memory="small")
        with pytest.raises(al.AnchorlensError, match="prefix='auto' or 'never'"):
            al.saliency(model, ps, memory="lean", prefix="always")
        monkeypatch.setattr(lean, "available_bytes", lambda m: 1000)  # "almost no memory left"
        for run in (
            lambda: al.saliency(model, ps, memory="exact"),
            lambda: span_flow(model, sps, memory="exact"),
            lambda: discover(model, ps, memory="exact"),
            lambda: faithfulness(model, ps, steps=1, memory="exact"),
        ):
            with pytest.raises(al.AnchorlensError, match="memory='lean'"):
                run()
        # a prompt longer than the model's context, with its length and the limit
        text = "Review:" + " good movie" * 200
        long = span_prompt(model, text, {"a": "Review"}, target=" yes", max_tokens=10**6)
        n = len(long.run_tokens)
        for memory in ("auto", "exact", "lean"):
            with pytest.raises(
                al.AnchorlensError, match=rf"{n} tokens is longer than the model's context of 256"
            ):
                span_flow(model, [long], memory=memory)
        assert calls == []
    finally:
        handle.remove()


def test_auto_picks_lean_where_exact_would_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    model = al.tiny_model(n_layers=2, seed=1)
    ps = al.build_prompts(model, make_toy_task(), n=3, shots=1, seed=5)
    need = lean.exact_bytes(model, [len(p) for p in ps], 4)
    assert lean.choose_memory(model, [len(p) for p in ps], batch_size=4) == "exact"
    monkeypatch.setattr(lean, "available_bytes", lambda m: need)  # fits, but not with the headroom
    assert lean.choose_memory(model, [len(p) for p in ps], batch_size=4) == "lean"
    used: list[int] = []
    real = lean.lean_gradients

    def spy(*args: Any, **kwargs: Any) -> Any:
        used.append(1)
        yield from real(*args, **kwargs)

    monkeypatch.setattr("anchorlens.experiments.saliency.compute.lean_gradients", spy)
    auto = al.saliency(model, ps)
    assert used == [1]
    monkeypatch.undo()
    assert_same_flows(auto, al.saliency(model, ps, memory="exact"))


def test_a_detached_pattern_or_residual_is_refused() -> None:
    model = al.tiny_model(n_layers=2, seed=9)
    ps = al.build_prompts(model, make_toy_task(), n=2)
    detach_z = [("blocks.0.attn.hook_z", lambda z, hook: z.detach())]
    with pytest.raises(al.AnchorlensError, match=r"blocks.0.attn.hook_pattern is not in the forward path"):
        al.saliency(model, ps, fwd_hooks=detach_z, memory="lean")
    detach_resid = [("blocks.1.hook_resid_pre", lambda x, hook: x.detach())]
    with pytest.raises(al.AnchorlensError, match=r"blocks.0.attn.hook_pattern is not in the forward path"):
        al.saliency(model, ps, fwd_hooks=detach_resid, memory="lean")
    with torch.inference_mode(), pytest.raises(al.AnchorlensError, match="inference_mode"):
        al.saliency(model, ps, memory="lean")
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


# ------------------------------------------------------------------------------------------------
# The real model


@pytest.mark.real
def test_smollm2_saliency_lean_equals_exact(smollm2: Any) -> None:
    ps = al.build_prompts(smollm2, al.load_task("sst2"), n=2, shots=1, seed=42, resample=True)
    lean_res, exact = both(lambda m: al.saliency(smollm2, ps, batch_size=2, memory=m))
    assert_same_flows(lean_res, exact)


@pytest.mark.real
@pytest.mark.slow
def test_smollm2_long_span_flow_lean_equals_exact(smollm2: Any) -> None:
    """A ~1k-token chain-of-thought style prompt: span totals within 1e-5 relative."""
    steps = [f"Step {k}: the shop has {17 + 3 * k} + 3 = {20 + 3 * k} boxes." for k in range(1, 45)]
    text = "Question: A shop has 20 boxes. How many at the end?\n" + "\n".join(steps) + "\nSo it has"
    spans = {"question": "Question: A shop has 20 boxes.", "first": steps[0], "last": steps[-1]}
    p = span_prompt(smollm2, text, spans, target=f" {20 + 3 * 44} boxes")
    assert 700 <= len(p.run_tokens) <= 1024
    lean_res, exact = both(lambda m: span_flow(smollm2, [p], memory=m))
    # relative differences of the totals that do not vanish
    big = exact.total.abs() > 1e-6 * exact.total.abs().max()
    assert rel(lean_res.total[big], exact.total[big]) < 1e-5
    assert torch.equal(lean_res.pairs, exact.pairs)
