"""anchorlens on SAELens' ``HookedSAETransformer`` with a sparse autoencoder spliced into the residual stream.

The SAE is random (``StandardSAE`` from a ``StandardSAEConfig``, SAELens' own initialisation: ``W_dec``
Kaiming-uniform, ``W_enc = W_dec.T``, zero biases; d_in = d_model = 64, d_sae = 256), attached at
``blocks.1.hook_resid_post`` of 4-layer tiny models (GPT-2-like, and Llama-like with rotary positions and
grouped-query attention). With ``use_error_term=False`` the residual stream after layer 1 is replaced by
the SAE's reconstruction, so the model computes something else; with ``use_error_term=True`` SAELens adds
the reconstruction error back and the forward pass is the plain model's again.

SAELens computes that error term under ``torch.no_grad()``: gradients reach the layers up to the SAE only
through its features. So on the error-term model the logits (deep-layer attention, isolation) equal the
plain model's, and saliency ``A * dL/dA`` equals it in the layers after the SAE but not in the layers up to
it, where it measures the flow as seen through the SAE's features.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
from transformer_lens.hook_points import HookPoint

import anchorlens as al
from anchorlens.core.backends import quiet_deprecation

from .conftest import make_toy_task

with warnings.catch_warnings():  # sae_lens imports transformer_lens.utils, deprecated in TL 3.x
    warnings.filterwarnings(
        "ignore", message="The 'utils' module has been deprecated", category=DeprecationWarning
    )
    from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

N_LAYERS = 4
MID = 1  # the SAE reads and replaces blocks.1.hook_resid_post: layers 0-1 before it, 2-3 after
HOOK = f"blocks.{MID}.hook_resid_post"
KINDS = {
    "gpt2_like": dict(positional_embedding_type="standard", seed=1),
    "llama_like": dict(positional_embedding_type="rotary", n_key_value_heads=2, seed=2),
}


def sae_twin(plain: Any) -> Any:
    """A ``HookedSAETransformer`` with ``plain``'s config, tokenizer and weights, in :func:`al.fast_layout`."""
    with quiet_deprecation():
        model = HookedSAETransformer(plain.cfg, plain.tokenizer, default_padding_side="right")
    model.load_state_dict(plain.state_dict())
    model.eval()
    return al.fast_layout(model)


def random_sae(d_in: int, seed: int = 0) -> StandardSAE:
    torch.manual_seed(seed)
    cfg = StandardSAEConfig(d_in=d_in, d_sae=4 * d_in, metadata=SAEMetadata(hook_name=HOOK))
    return StandardSAE(cfg)


@pytest.fixture(scope="module", params=list(KINDS))
def setup(request):  # type: ignore[no-untyped-def]
    """(plain tiny model, its HookedSAETransformer twin, a random SAE, 4 prompts, the plain model's
    saliency, isolation and deep results)."""
    plain = al.tiny_model(n_layers=N_LAYERS, **KINDS[request.param])  # type: ignore[arg-type]
    model = sae_twin(plain)
    prompts = al.build_prompts(model, make_toy_task(), n=4, shots=1, seed=0)
    return plain, model, random_sae(model.cfg.d_model), prompts, run_all(plain, prompts)


def run_all(model: Any, prompts: Any, **kw: Any) -> tuple[Any, Any, Any]:
    """Saliency, isolation of the label words in the first and the last layer, deep-layer attention."""
    sal = al.saliency(model, prompts, batch_size=len(prompts), **kw)
    iso = al.isolation(model, prompts, ks=(1,), anchors=("label",), batch_size=len(prompts), **kw)
    dl = al.deep(model, prompts, batch_size=len(prompts), **kw)
    return sal, iso, dl


def attached(model: Any, sae: Any) -> list[str]:
    """Hook points (the model's and the SAE's) that still hold a hook function, and attached SAEs."""
    names = [n for n, hp in model.hook_dict.items() if hp.fwd_hooks or hp.bwd_hooks]
    names += [f"sae.{n}" for n, hp in sae.hook_dict.items() if hp.fwd_hooks or hp.bwd_hooks]
    names += [f"sae at {n}" for n in model.acts_to_saes]
    if type(model.get_submodule(HOOK)) is not HookPoint:
        names.append(f"{HOOK} is still {type(model.get_submodule(HOOK)).__name__}")
    return names


def logits(model: Any, prompts: Any) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([prompts[0].tokens]))


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def test_twin_is_the_same_model(setup) -> None:  # type: ignore[no-untyped-def]
    """HookedSAETransformer built from the tiny model's config and state dict, fast_layout applied:
    bit-identical logits while no SAE is attached."""
    plain, model, _, prompts, _ = setup
    assert isinstance(model, HookedSAETransformer) and model.acts_to_saes == {}
    torch.testing.assert_close(logits(model, prompts), logits(plain, prompts), rtol=0, atol=0)


def test_experiments_run_through_the_sae_and_see_it(setup) -> None:  # type: ignore[no-untyped-def]
    plain, model, sae, prompts, (sal0, iso0, dl0) = setup
    with model.saes(saes=[sae], use_error_term=False):
        assert set(model.acts_to_saes) == {HOOK}
        sal, iso, dl = run_all(model, prompts)
    assert attached(model, sae) == []
    assert all(p.grad is None for p in sae.parameters())  # saliency used autograd.grad, nothing accumulated
    torch.testing.assert_close(logits(model, prompts), logits(plain, prompts), rtol=0, atol=0)

    # Saliency: every flow is finite and the curves moved.
    for flow in ("S_wp", "S_pq", "S_ww"):
        assert torch.isfinite(getattr(sal, flow)).all()
        assert getattr(sal, flow).shape == (len(prompts), N_LAYERS)
        assert max_diff(getattr(sal, flow), getattr(sal0, flow)) > 1e-4, flow
    # Deep layers: attention before the SAE is untouched, after it changed; so did the answer.
    torch.testing.assert_close(dl.attention[:, : MID + 1], dl0.attention[:, : MID + 1], rtol=0, atol=1e-6)
    assert max_diff(dl.attention[:, MID + 1 :], dl0.attention[:, MID + 1 :]) > 1e-3
    assert max_diff(dl.predictions.label_logits, dl0.predictions.label_logits) > 1e-3
    # Isolation: both runs (label words, first and last layer), loyalties measured against the SAE model's own reference.
    assert len(iso.runs) == 2 and all(
        0 <= r.label_loyalty <= 1 and 0 <= r.word_loyalty <= 1 for r in iso.runs
    )
    torch.testing.assert_close(iso.reference.label_logits, dl.predictions.label_logits, rtol=0, atol=1e-5)
    assert max_diff(iso.reference.label_logits, iso0.reference.label_logits) > 1e-3


def test_error_term_gives_back_the_plain_forward(setup) -> None:  # type: ignore[no-untyped-def]
    _, model, sae, prompts, (sal0, iso0, dl0) = setup
    with model.saes(saes=[sae], use_error_term=True):
        sal, iso, dl = run_all(model, prompts)
    assert attached(model, sae) == []

    # Forward quantities: the plain model's, up to float rounding of x - recon(x) + recon(x).
    torch.testing.assert_close(dl.attention, dl0.attention, rtol=0, atol=1e-5)
    torch.testing.assert_close(dl.predictions.label_logits, dl0.predictions.label_logits, rtol=0, atol=1e-5)
    torch.testing.assert_close(iso.reference.label_logits, iso0.reference.label_logits, rtol=0, atol=1e-5)
    assert [r.label_loyalty for r in iso.runs] == pytest.approx([r.label_loyalty for r in iso0.runs])
    assert [r.word_loyalty for r in iso.runs] == pytest.approx([r.word_loyalty for r in iso0.runs])
    # Saliency: equal after the SAE; up to it, the gradient only flows through the SAE's features
    # (SAELens detaches the error term), so A * dL/dA differs there.
    for flow in ("S_wp", "S_pq", "S_ww"):
        after, after0 = getattr(sal, flow)[:, MID + 1 :], getattr(sal0, flow)[:, MID + 1 :]
        torch.testing.assert_close(after, after0, rtol=1e-4, atol=1e-6)
        assert max_diff(getattr(sal, flow)[:, : MID + 1], getattr(sal0, flow)[:, : MID + 1]) > 1e-4, flow


def test_caller_hooks_on_sae_features(setup) -> None:  # type: ignore[no-untyped-def]
    """A caller's hook on the SAE's feature activations (half the features zeroed), passed as
    ``fwd_hooks=``: reaches the SAE, changes every experiment, and equals attaching it around the call."""
    _, model, sae, prompts, _ = setup
    fns: list[Callable[..., Any]] = [al.saliency, al.isolation, al.deep]
    if not all("fwd_hooks" in inspect.signature(f).parameters for f in fns):
        pytest.skip("an experiment does not accept fwd_hooks= yet")
    keep = torch.arange(sae.cfg.d_sae) % 2 == 0

    def ablate_odd_features(acts: torch.Tensor, hook: Any) -> torch.Tensor:
        return acts * keep.to(acts.dtype)

    hooks = [(f"{HOOK}.hook_sae_acts_post", ablate_odd_features)]
    with model.saes(saes=[sae], use_error_term=True):
        base = run_all(model, prompts)
        passed = run_all(model, prompts, fwd_hooks=hooks)
        with model.hooks(fwd_hooks=hooks):
            around = run_all(model, prompts)
    assert attached(model, sae) == []

    torch.testing.assert_close(passed[0].S_pq, around[0].S_pq, rtol=1e-5, atol=1e-7)
    assert max_diff(passed[0].S_pq, base[0].S_pq) > 1e-4
    torch.testing.assert_close(passed[1].reference.label_logits, around[1].reference.label_logits)
    assert [r.word_loyalty for r in passed[1].runs] == pytest.approx([r.word_loyalty for r in around[1].runs])
    assert max_diff(passed[1].reference.label_logits, base[1].reference.label_logits) > 1e-3
    torch.testing.assert_close(passed[2].attention, around[2].attention)
    assert max_diff(passed[2].attention[:, MID + 1 :], base[2].attention[:, MID + 1 :]) > 1e-3
