"""The paper's phenomena on the real offline model (SmolLM2-135M), small n. Tests of 8 s or more are marked
``slow`` (run them with ``-m slow``); the compressed-cache equality stays in CI as the quick smoke test."""

from __future__ import annotations

import pytest
import torch

import anchorlens as al
from anchorlens.experiments.compression.compute import (
    anchor_positions,
    build_anchor_cache,
    predict_compressed,
    predict_masked,
)

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def sst2() -> al.Task:
    return al.load_task("sst2")


@pytest.mark.slow
def test_information_flow_shallow_text_to_label_deep_label_to_target(smollm2, sst2) -> None:  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(smollm2, sst2, n=8, shots=1, seed=42, resample=True)
    thirds = al.saliency(smollm2, prompts, batch_size=4).thirds()
    assert thirds[0]["dominant"] == "S_wp" and thirds[2]["dominant"] == "S_pq"


@pytest.mark.slow
def test_isolating_label_words_early_changes_the_output_most(smollm2, sst2) -> None:  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(smollm2, sst2, n=8, shots=1, seed=42)
    res = al.isolation(smollm2, prompts, ks=(5,))
    first = res.get("label", "first", 5).word_loyalty
    assert (
        first < res.get("label", "last", 5).word_loyalty
        and first < res.get("random", "first", 5).word_loyalty
    )


def test_compressed_cache_equals_masked_full_prompt_on_rotary_gqa(smollm2, sst2) -> None:  # type: ignore[no-untyped-def]
    prompts = al.build_prompts(smollm2, sst2, n=4, shots=1, seed=42)
    kept = anchor_positions(prompts[0])
    fast = predict_compressed(smollm2, prompts, build_anchor_cache(smollm2, prompts[0], kept), batch_size=4)
    exact = predict_masked(smollm2, prompts, kept, batch_size=4)
    torch.testing.assert_close(fast.label_logits, exact.label_logits, atol=1e-3, rtol=1e-4)


@pytest.mark.slow
def test_saliency_composes_with_label_isolation_and_reweighting(smollm2, sst2) -> None:  # type: ignore[no-untyped-def]
    """The caller's hooks reach the real model: isolation empties S_wp in its layers; a re-weighting applied
    around an experiment equals the same re-weighting passed as fwd_hooks."""
    prompts = al.build_prompts(smollm2, sst2, n=2, shots=1, seed=42)
    cut = al.saliency(smollm2, prompts, fwd_hooks=al.isolate(prompts, range(5)))
    assert bool((cut.S_wp[:, :5] == 0).all()) and bool((cut.S_wp[:, 5:-1] > 0).all())  # last layer: 0 anyway
    module = al.AnchorReweighting.for_model(smollm2, sst2, prompts.demonstrations.demos)
    with torch.no_grad():
        module.beta.fill_(1.0)
    with module.applied(smollm2, prompts[0]):
        inside = al.deep(smollm2, prompts)
    hooked = al.deep(smollm2, prompts, fwd_hooks=module.hooks)
    torch.testing.assert_close(inside.attention, hooked.attention)
    assert not torch.allclose(hooked.attention, al.deep(smollm2, prompts).attention)
