"""The TransformerBridge backend: the same experiments as on HookedTransformer, on the same weights.

Runs in both environments: TransformerLens 3.9 (``.venv``; the twin tests build a HookedTransformer from the
very Hugging Face weights the Bridge wraps and compare every experiment) and TransformerLens 4.3
(``.venv-tl4``, which has no HookedTransformer; the twin tests are skipped there).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import anchorlens as al
from anchorlens.core import backends
from anchorlens.core.models import bridge_from_hf
from anchorlens.core.tiny import tiny_bridge, tiny_hf_model, tiny_tokenizer
from tests.conftest import make_toy_task

needs_hooked = pytest.mark.skipif(not backends.hooked_available(), reason="HookedTransformer needs TL 3.x")
ARCHS = {"gpt2": {}, "llama": {"n_key_value_heads": 2}}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def pair(request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """``(bridge, hooked)`` over the same random Hugging Face weights (hooked is None on TL 4.x)."""
    hf = tiny_hf_model(request.param, seed=3, **ARCHS[request.param])
    bridge = bridge_from_hf(hf, tiny_tokenizer(), f"anchorlens-tiny-{request.param}")
    return bridge, (hooked_twin(hf, request.param) if backends.hooked_available() else None)


def hooked_twin(hf: Any, arch: str) -> Any:
    """A HookedTransformer with ``hf``'s weights (TransformerLens' own conversions, nothing folded)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights, convert_llama_weights

    c = hf.config
    tok = tiny_tokenizer()
    common = dict(d_vocab=c.vocab_size, default_prepend_bos=False, tokenizer_prepends_bos=False, device="cpu")
    if arch == "gpt2":
        cfg = HookedTransformerConfig(
            n_layers=c.n_layer, d_model=c.n_embd, n_heads=c.n_head, d_head=c.n_embd // c.n_head,
            d_mlp=4 * c.n_embd, n_ctx=c.n_positions, act_fn="gelu_new", normalization_type="LN",
            eps=c.layer_norm_epsilon, **common,
        )  # fmt: skip
        state = convert_gpt2_weights(hf, cfg)
    else:
        d_head = c.hidden_size // c.num_attention_heads
        cfg = HookedTransformerConfig(
            n_layers=c.num_hidden_layers, d_model=c.hidden_size, n_heads=c.num_attention_heads,
            n_key_value_heads=c.num_key_value_heads, d_head=d_head, d_mlp=c.intermediate_size,
            n_ctx=c.max_position_embeddings, act_fn="silu", normalization_type="RMS", eps=c.rms_norm_eps,
            positional_embedding_type="rotary", rotary_dim=d_head, rotary_base=c.rope_parameters["rope_theta"],
            rotary_adjacent_pairs=False, final_rms=True, gated_mlp=True, **common,
        )  # fmt: skip
        state = convert_llama_weights(hf, cfg)
    with backends.quiet_deprecation():
        model = HookedTransformer(cfg, tok, default_padding_side="right")
    model.load_and_process_state_dict(
        state, fold_ln=False, center_writing_weights=False, center_unembed=False, fold_value_biases=False
    )
    return al.fast_layout(model.eval())


def _prompts(model: Any, n: int = 8) -> al.PromptSet:
    return al.build_prompts(model, make_toy_task(), n=n, shots=1, seed=0)


# ------------------------------------------------------------------------------------------------
# Loading and introspection


def test_tiny_bridge_models_load_offline_without_bos(pair: tuple[Any, Any]) -> None:
    bridge, _ = pair
    assert backends.backend_of(bridge) == "bridge" and bridge.cfg.default_prepend_bos is False
    toks = bridge.to_tokens("Review: good\nSentiment:")
    assert bridge.to_str_tokens(toks[0]) == ["Review", ":", " good", "\n", "Sentiment", ":"]
    assert al.fast_layout(bridge) is bridge
    for name in ("hook_pattern", "hook_attn_scores", "hook_q", "hook_k"):
        assert f"blocks.1.attn.{name}" in bridge.hook_dict
    tiny = al.tiny_model(positional_embedding_type="rotary", n_key_value_heads=2, backend="bridge")
    assert backends.n_key_value_heads(tiny) == 2 and backends.is_rotary(tiny)
    assert backends.attention_class(tiny) == "PositionEmbeddingsAttentionBridge"


def test_gqa_weights_per_key_value_head_on_the_bridge() -> None:
    bridge = tiny_bridge("llama", n_key_value_heads=2)
    assert bridge.W_K.shape[1] == 2 and bridge.W_Q.shape[1] == 4
    repeated = backends.per_query_head(bridge.W_K, bridge)
    assert repeated.shape == bridge.W_Q.shape and torch.equal(repeated[:, 1], bridge.W_K[:, 0])


# ------------------------------------------------------------------------------------------------
# The same numbers as HookedTransformer on the same weights


@needs_hooked
def test_bridge_logits_equal_hooked_twin(pair: tuple[Any, Any]) -> None:
    bridge, hooked = pair
    toks = torch.arange(3, 23)[None]
    with torch.no_grad():
        assert torch.allclose(bridge(toks), hooked(toks), atol=1e-4)


@needs_hooked
def test_experiments_agree_with_hooked_twin(pair: tuple[Any, Any]) -> None:
    bridge, hooked = pair
    pb, ph = _prompts(bridge), _prompts(hooked)
    assert [p.tokens for p in pb] == [p.tokens for p in ph]
    assert torch.equal(al.predict(bridge, pb).predictions, al.predict(hooked, ph).predictions)
    sb, sh = al.saliency(bridge, pb), al.saliency(hooked, ph)
    for flow in ("S_wp", "S_pq", "S_ww"):
        torch.testing.assert_close(getattr(sb, flow), getattr(sh, flow), rtol=1e-3, atol=1e-6)
    for mode in ("pre", "post"):
        ib, ih = al.isolation(bridge, pb, ks=(1,), mode=mode), al.isolation(hooked, ph, ks=(1,), mode=mode)
        for rb, rh in zip(ib.runs, ih.runs, strict=True):
            assert (rb.label_loyalty, rb.word_loyalty) == pytest.approx((rh.label_loyalty, rh.word_loyalty))
    db, dh = al.deep(bridge, pb), al.deep(hooked, ph)
    assert db.aucroc == pytest.approx(dh.aucroc, abs=1e-6, nan_ok=True)


@needs_hooked
def test_diagnosis_and_reweighting_agree_with_hooked_twin(pair: tuple[Any, Any]) -> None:
    bridge, hooked = pair
    pb, ph = _prompts(bridge, 12), _prompts(hooked, 12)
    xb = al.diagnose(bridge, pb, layer=1, n_components=4)
    xh = al.diagnose(hooked, ph, layer=1, n_components=4)
    assert xb.spearman == pytest.approx(xh.spearman, abs=1e-6, nan_ok=True)
    betas = []
    for model in (bridge, hooked):
        module, _ = al.train_reweighting(model, make_toy_task(), seed=0, aux_shots=2, epochs=1)
        betas.append(module.beta.detach())
        assert all(p.grad is None for p in model.parameters())
    torch.testing.assert_close(betas[0], betas[1], atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------
# No silent no-ops


def test_delegating_attention_refused_before_any_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    gptj = tiny_bridge("gptj")
    prompts = _prompts(gptj, 2)
    calls: list[int] = []
    monkeypatch.setattr(gptj.original_model, "forward", lambda *a, **k: calls.append(1))
    for run in (lambda: al.isolation(gptj, prompts, ks=(1,)), lambda: al.saliency(gptj, prompts)):
        with pytest.raises(al.AnchorlensError, match=r"GPTJForCausalLM.*AttentionBridge.*backend='hooked'"):
            run()
    assert calls == []


def test_edit_self_check_runs_once_per_model_and_point(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_bridge("llama", seed=5)
    seen: list[str] = []
    real = backends._edit_changes_logits

    def spy(m: Any, point: str) -> bool:
        seen.append(point)
        return real(m, point)

    monkeypatch.setattr(backends, "_edit_changes_logits", spy)
    prompts = _prompts(model, 2)
    al.isolation(model, prompts, ks=(1,), mode="pre")
    al.isolation(model, prompts, ks=(1,), mode="post")
    al.saliency(model, prompts)
    assert sorted(seen) == ["hook_attn_scores", "hook_pattern"]


def test_edit_that_changes_nothing_is_refused() -> None:
    model = tiny_bridge("llama", seed=6)
    with torch.no_grad():
        for layer in model.original_model.model.layers:
            layer.self_attn.o_proj.weight.zero_()  # attention no longer reaches the residual stream
    with pytest.raises(al.AnchorlensError, match=r"hook_pattern does not change LlamaForCausalLM"):
        al.isolation(model, _prompts(model, 2), ks=(1,), mode="post")


# ------------------------------------------------------------------------------------------------
# Backend choice, bad input, devices


def test_unknown_backend_refused() -> None:
    with pytest.raises(al.AnchorlensError, match=r"Unknown backend 'jax'.*'hooked'.*'bridge'"):
        al.load_model("smollm2-135m", backend="jax")
    with pytest.raises(al.AnchorlensError, match="Unknown backend"):
        al.tiny_model(backend="jax")


def test_hooked_on_tl4_says_it_needs_tl3(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "hooked_available", lambda: False)
    assert backends.default_backend() == "bridge"
    with pytest.raises(al.AnchorlensError, match=r"HookedTransformer.*TransformerLens 3\.x.*'bridge'"):
        al.load_model("smollm2-135m", backend="hooked")


def test_multi_device_arguments_arrive(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformer_lens.model_bridge import TransformerBridge

    seen: dict[str, Any] = {}
    tiny = tiny_bridge("gpt2")

    def boot(name: str, **kwargs: Any) -> Any:
        seen.update(kwargs, name=name)
        return tiny

    monkeypatch.setattr(TransformerBridge, "boot_transformers", boot)
    model = al.load_model("EleutherAI/gpt-j-6b", backend="bridge", device_map="auto", n_devices=2)
    assert seen["device_map"] == "auto" and seen["n_devices"] == 2 and "device" not in seen
    assert model.cfg.default_prepend_bos is False


@needs_hooked
def test_hooked_n_devices_arrives(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformer_lens import HookedTransformer

    seen: dict[str, Any] = {}

    def from_pretrained(name: str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return al.tiny_model()

    monkeypatch.setattr(HookedTransformer, "from_pretrained", from_pretrained)
    al.load_model("gpt2", backend="hooked", n_devices=2, device="cpu")
    assert seen["n_devices"] == 2 and seen["default_prepend_bos"] is False
    with pytest.raises(al.AnchorlensError, match="device_map is the Bridge's"):
        al.load_model("gpt2", backend="hooked", device_map="auto")


# ------------------------------------------------------------------------------------------------
# The real model


@pytest.mark.real
def test_smollm2_through_the_bridge_matches_hf() -> None:
    from anchorlens.core.offline import cached_smollm2_hf

    bridge = al.load_model("smollm2-135m", backend="bridge", device="cpu")
    assert backends.attention_class(bridge) == "PositionEmbeddingsAttentionBridge"
    assert bridge.cfg.default_prepend_bos is False and backends.n_key_value_heads(bridge) == 3
    hf, tok = cached_smollm2_hf()
    ids = torch.tensor([tok("Review: a moving film\nSentiment:", add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        assert torch.allclose(bridge(ids), hf(ids).logits, atol=1e-4)
    pred = al.predict(bridge, al.build_prompts(bridge, al.load_task("sst2"), n=4, shots=1, seed=42))
    assert len(pred) == 4 and pred.accuracy >= 0.5


# ------------------------------------------------------------------------------------------------
# The command line and the report


def _cli(tmp_path: Any, command: str, *flags: str) -> int:
    from anchorlens.cli import main as cli
    from tests.helpers import user_task

    tmp_path.mkdir(parents=True, exist_ok=True)
    task = user_task(tmp_path / "task")
    out = ["--task", str(task), "--n", "3", "--out", str(tmp_path / "o"), "--quiet"]
    return cli.main([command, "--model", "x", *flags, *out])


def test_every_sub_command_that_loads_a_model_takes_backend() -> None:
    from anchorlens.cli.main import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    for name, command in sub.choices.items():  # type: ignore[attr-defined]
        if name == "compare":  # reads report folders only; it loads no model
            assert "--model" not in command._option_string_actions
            continue
        assert "--backend" in command._option_string_actions, name


def test_cli_backend_reaches_the_loader_and_the_output(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    seen: dict[str, Any] = {}
    model = tiny_bridge("llama", n_key_value_heads=2)

    def load(name: str, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return model

    monkeypatch.setattr("anchorlens.core.models.load_model", load)
    assert _cli(tmp_path, "predict", "--backend", "bridge") == 0
    assert seen["backend"] == "bridge"
    assert json.loads((tmp_path / "o" / "predict.json").read_text())["backend"] == "bridge"


def test_cli_bad_backends_exit_2(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(tmp_path / "a", "predict", "--backend", "jax") == 2
    assert "Unknown backend 'jax'" in capsys.readouterr().err
    monkeypatch.setattr(backends, "hooked_available", lambda: False)
    assert _cli(tmp_path / "b", "saliency", "--backend", "hooked") == 2
    assert "HookedTransformer, which TransformerLens 3.x has" in capsys.readouterr().err


def test_cli_refuses_gptj_before_any_experiment(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr("anchorlens.core.models.load_model", lambda *a, **k: tiny_bridge("gptj"))
    assert _cli(tmp_path, "isolation", "--backend", "bridge", "--k", "1") == 2  # a --k the model has
    assert "GPTJForCausalLM through TransformerBridge uses AttentionBridge" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_report_says_which_backend() -> None:
    from anchorlens.report.pages import _settings_line
    from anchorlens.report.run import ReproduceConfig, settings_key

    hooked, bridge = ReproduceConfig(backend="hooked"), ReproduceConfig(backend="bridge")
    assert "TransformerLens bridge backend" in _settings_line(bridge, "")
    assert settings_key(hooked) == settings_key(ReproduceConfig()) != settings_key(bridge)


# ------------------------------------------------------------------------------------------------
# Compression: the anchor cache as a Hugging Face cache with explicit positions


def test_bridge_prefix_cache_is_filled_and_used(pair: tuple[Any, Any]) -> None:
    """transformers 5.24 hands the attention its cache under a new name; TL must still fill and read it."""
    from anchorlens.core.kvcache import empty_cache, forward_arguments

    bridge, _ = pair
    toks = torch.arange(3, 23)[None]
    cache = empty_cache(bridge)
    with torch.no_grad():
        full = bridge(toks)
        bridge(
            toks[:, :12],
            **forward_arguments(bridge, torch.ones(1, 12, dtype=torch.long), cache.forward_kwargs()),
        )
        assert len(cache) == 12
        mask = torch.ones(1, 8, dtype=torch.long)
        frozen = cache.filled().forward_kwargs(1)
        query = bridge(toks[:, 12:], **forward_arguments(bridge, mask, frozen))
        # the growing cache itself: one more token after the twelve, at position 12
        step = bridge(toks[:, 12:13], **forward_arguments(bridge, mask[:, :1], cache.forward_kwargs()))
    torch.testing.assert_close(query, full[:, 12:], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(step, full[:, 12:13], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------------------------------
# Greedy generation (spans) through the backend adapter


@pytest.mark.parametrize("cut", [False, True])
def test_span_generation_on_the_bridge_equals_hooked_twin(pair: tuple[Any, Any], cut: bool) -> None:
    """Cached greedy decoding on the Bridge (a Hugging Face cache) gives the tokens of re-running the whole
    sequence, with and without a span cut in every step, and (on TL 3.x) the tokens of the hooked twin."""
    from anchorlens.core.hooks import cut_edges_hooks
    from anchorlens.spans import greedy_generate
    from anchorlens.spans.generation import cut_matrix

    bridge, hooked = pair
    tokens, pos, layers = list(range(5, 17)), [2, 3, 4], [0]
    spec = (pos, layers, "into") if cut else None
    out = greedy_generate(bridge, tokens, 5, cut=spec, stop_at_eos=False)
    seq = list(tokens)
    for _ in range(5):  # the uncached reference: the whole sequence, the cut as a full matrix
        in_span = torch.zeros(1, len(seq), dtype=torch.bool)
        in_span[0, pos] = True
        hooks = cut_edges_hooks(layers, cut_matrix(in_span, len(seq), "into")) if cut else []
        with torch.no_grad(), bridge.hooks(fwd_hooks=hooks):
            seq.append(int(bridge(torch.tensor([seq]))[0, -1].argmax()))
    assert out == seq[len(tokens) :]
    if hooked is not None:
        assert greedy_generate(hooked, tokens, 5, cut=spec, stop_at_eos=False) == out


def test_bridge_compression_equals_the_exact_masked_path(pair: tuple[Any, Any]) -> None:
    from anchorlens.experiments.compression.compute import (
        anchor_positions,
        build_anchor_cache,
        predict_compressed,
        predict_masked,
    )

    bridge, _ = pair
    ps = al.build_prompts(bridge, make_toy_task(), n=6, shots=2, seed=3)
    kept = anchor_positions(ps[0])
    fast = predict_compressed(bridge, ps, build_anchor_cache(bridge, ps[0], kept, "original"), batch_size=4)
    exact = predict_masked(bridge, ps, kept, batch_size=3)
    torch.testing.assert_close(fast.label_logits, exact.label_logits, atol=1e-4, rtol=1e-4)
    every = list(range(ps[0].query_start))
    for positions in ("original", "compacted"):
        got = predict_compressed(
            bridge, ps, build_anchor_cache(bridge, ps[0], every, positions), batch_size=2
        )
        torch.testing.assert_close(
            got.label_logits, al.predict(bridge, ps).label_logits, atol=1e-4, rtol=1e-4
        )


@needs_hooked
def test_bridge_compression_equals_hooked_twin(pair: tuple[Any, Any]) -> None:
    from anchorlens.experiments.compression.compute import predict_compressed

    bridge, hooked = pair
    pb, ph = (al.build_prompts(m, make_toy_task(), n=6, shots=2, seed=3) for m in (bridge, hooked))
    for positions in ("original", "compacted"):
        got = predict_compressed(bridge, pb, positions=positions).label_logits
        ref = predict_compressed(hooked, ph, positions=positions).label_logits
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    cb, ch = al.compression(bridge, pb, timing=False), al.compression(hooked, ph, timing=False)
    for method, scores in ch.methods.items():
        assert cb.methods[method] == pytest.approx(scores), method
