from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import anchorlens as al
from anchorlens.core.models import frozen


def naive_saliency(model, prompt: al.IclPrompt, heads: str = "sum") -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Batch size 1, pattern.retain_grad() per layer, loss.backward(): ``[layer, q, k]``."""
    cache: dict[int, torch.Tensor] = {}

    def keep(pattern: torch.Tensor, hook) -> None:  # type: ignore[no-untyped-def]
        pattern.retain_grad()
        cache[hook.layer()] = pattern

    names = [(f"blocks.{layer}.attn.hook_pattern", keep) for layer in range(model.cfg.n_layers)]
    with torch.enable_grad(), model.hooks(fwd_hooks=names):
        logits = model(torch.tensor([prompt.tokens]))[0, -1]
        loss = F.cross_entropy(logits[list(prompt.label_token_ids)][None], torch.tensor([prompt.label]))
        loss.backward()
    model.zero_grad(set_to_none=True)
    out = []
    for layer in range(model.cfg.n_layers):
        prod = cache[layer][0] * cache[layer].grad[0]  # [head, q, k]
        out.append(prod.sum(0).abs() if heads == "sum" else prod.abs().sum(0))
    return torch.stack(out).detach()


def naive_flows(sal: torch.Tensor, prompt: al.IclPrompt) -> tuple[list[float], list[float], list[float]]:
    """Python loops over the pair sets of reference section 2.2."""
    q, labels = prompt.target, prompt.label_positions
    wp = [(p, j) for p in labels for j in range(p)]
    pq = [(q, p) for p in labels]
    ww = [(i, j) for i in range(q + 1) for j in range(i) if (i, j) not in set(wp) | set(pq)]
    assert len(ww) == q * (q + 1) // 2 - sum(labels) - len(labels)
    res: tuple[list[float], list[float], list[float]] = ([], [], [])
    for layer in range(sal.shape[0]):
        for dst, pairs in zip(res, (wp, pq, ww), strict=True):
            dst.append(sum(float(sal[layer, i, j]) for i, j in pairs) / len(pairs))
    return res


@pytest.mark.parametrize("heads", ["sum", "abs"])
def test_matches_naive_reference(tiny, toy_task, heads: str) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=5, shots=1, seed=3)
    res = al.saliency(tiny, ps, batch_size=3, heads=heads, keep="layers")  # type: ignore[arg-type]
    assert res.matrices is not None
    for i, p in enumerate(ps):
        ref = naive_saliency(tiny, p, heads)
        torch.testing.assert_close(res.matrices[i], ref, atol=1e-5, rtol=1e-5)
        wp, pq, ww = naive_flows(ref, p)
        assert res.S_wp[i].tolist() == pytest.approx(wp, abs=1e-5, rel=1e-5)
        assert res.S_pq[i].tolist() == pytest.approx(pq, abs=1e-5, rel=1e-5)
        assert res.S_ww[i].tolist() == pytest.approx(ww, abs=1e-5, rel=1e-5)


def test_one_entry_against_finite_differences(toy_task) -> None:  # type: ignore[no-untyped-def]
    model = al.tiny_model(
        positional_embedding_type="rotary", n_key_value_heads=2, dtype=torch.float64, seed=4
    )
    p = al.build_prompts(model, toy_task, n=1, shots=1, seed=0)[0]
    layer, i, j = 1, p.target, p.label_positions[0]
    signed = al.saliency(model, [p], keep="heads").matrices[0][layer].sum(0)[i, j]  # type: ignore[index]

    def loss(eps: float) -> float:
        def scale(pattern: torch.Tensor, hook) -> torch.Tensor:  # type: ignore[no-untyped-def]
            pattern = pattern.clone()
            pattern[:, :, i, j] *= 1 + eps
            return pattern

        with torch.no_grad():
            logits = model.run_with_hooks(
                torch.tensor([p.tokens]), fwd_hooks=[(f"blocks.{layer}.attn.hook_pattern", scale)]
            )
        return float(F.cross_entropy(logits[0, -1, list(p.label_token_ids)][None], torch.tensor([p.label])))

    eps = 1e-5
    fd = (loss(eps) - loss(-eps)) / (2 * eps)  # d/d(eps) L(A * (1 + eps)) = sum_h A * dL/dA
    assert abs(float(signed)) > 1e-6
    assert float(signed) == pytest.approx(fd, rel=1e-5, abs=1e-9)


@pytest.mark.parametrize("side", ["right", "left"])
def test_batched_equals_per_example(tiny, toy_task, side: str) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(tiny, toy_task, n=6, shots=1, seed=5, resample=True)
    one = al.saliency(tiny, ps, batch_size=1)
    many = al.saliency(tiny, ps, batch_size=6, padding_side=side)  # type: ignore[arg-type]
    for a, b in [(one.S_wp, many.S_wp), (one.S_pq, many.S_pq), (one.S_ww, many.S_ww)]:
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_no_grad_notebooks_and_no_parameter_grads(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    ps = al.build_prompts(gpt2_like, toy_task, n=2)
    ref = al.saliency(gpt2_like, ps)
    torch.set_grad_enabled(False)
    try:
        again = al.saliency(gpt2_like, ps)
    finally:
        torch.set_grad_enabled(True)
    torch.testing.assert_close(again.S_pq, ref.S_pq)
    assert all(p.grad is None and p.requires_grad for p in gpt2_like.parameters())
    assert all(not hp.fwd_hooks for hp in gpt2_like.hook_dict.values())


def test_last_layer_text_to_label_flow_is_exactly_zero(tiny, toy_task) -> None:  # type: ignore[no-untyped-def]
    """Analytic case: in the last layer only the target row reaches the loss, so S_wp = 0 there."""
    res = al.saliency(tiny, al.build_prompts(tiny, toy_task, n=3))
    assert torch.all(res.S_wp[:, -1] == 0) and torch.all(res.S_pq[:, -1] > 0)


def test_result_curves_and_json(gpt2_like, toy_task) -> None:  # type: ignore[no-untyped-def]
    res = al.saliency(gpt2_like, al.build_prompts(gpt2_like, toy_task, n=3))
    norm = res.normalized()
    total = norm["S_wp_norm"] + norm["S_pq_norm"] + norm["S_ww_norm"]
    torch.testing.assert_close(total, torch.ones(gpt2_like.cfg.n_layers))
    torch.testing.assert_close(res.curves()["S_wp"], res.S_wp.mean(0))
    js = res.to_json()
    assert js["n_layers"] == 2 and len(js["S_ww_norm"]) == 2
    # two layers: the shallow and deep thirds hold one layer each, the middle third none
    assert [t["layers"] for t in js["thirds"]] == [[0, 0], [], [1, 1]]
    assert js["thirds"][1]["dominant"] is None and js["thirds"][0]["S_wp_norm"] == float(norm["S_wp_norm"][0])


def test_refusals(toy_task) -> None:  # type: ignore[no-untyped-def]
    model = al.tiny_model(seed=9)
    ps = al.build_prompts(model, toy_task, n=2)
    with torch.inference_mode(), pytest.raises(al.AnchorlensError, match="inference_mode"):
        al.saliency(model, ps)
    detach_z = [("blocks.0.attn.hook_z", lambda z, hook: z.detach())]
    with pytest.raises(al.AnchorlensError, match=r"blocks.0.attn.hook_pattern is not in the forward path"):
        al.saliency(model, ps, fwd_hooks=detach_z)
    unlabeled = al.build_prompts(model, toy_task, queries=[al.Example("good", -1)])
    with pytest.raises(al.AnchorlensError, match="gold label"):
        al.saliency(model, unlabeled)
    with pytest.raises(al.AnchorlensError, match="heads must be"):
        al.saliency(model, ps, heads="max")  # type: ignore[arg-type]
    model.blocks[1].attn.hook_pattern = torch.nn.Identity()  # the hook point is no longer called
    with pytest.raises(al.AnchorlensError, match=r"blocks\.1\.attn\.hook_pattern never ran"):
        al.saliency(model, ps)
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_frozen_restores_after_an_exception(gpt2_like) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(RuntimeError), frozen(gpt2_like):
        assert not any(p.requires_grad for p in gpt2_like.parameters())
        raise RuntimeError
    assert all(p.requires_grad for p in gpt2_like.parameters())
