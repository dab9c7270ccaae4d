from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

import anchorlens as al
from anchorlens.core.backends import is_bridge
from anchorlens.core.models import load_model
from anchorlens.core.offline import default_cache_dir, load_smollm2_hf
from anchorlens.core.tiny import tiny_hf_model, tiny_tokenizer


def test_tiny_models_are_offline_and_configurable() -> None:
    m = al.tiny_model(positional_embedding_type="rotary", n_key_value_heads=2, n_layers=3)
    assert (
        m.cfg.n_layers == 3 and m.cfg.n_key_value_heads == 2 and m.cfg.positional_embedding_type == "rotary"
    )
    assert m.cfg.default_prepend_bos is False
    toks = m.to_tokens("Review: good\nSentiment:", prepend_bos=False)
    assert m.to_str_tokens(toks[0]) == ["Review", ":", " good", "\n", "Sentiment", ":"]
    assert m(toks).shape == (1, 6, m.cfg.d_vocab)


def test_tiny_tokenizer_marks_unknown_characters() -> None:
    tok = al.tiny_tokenizer()
    assert tok.unk_token_id in tok("é", add_special_tokens=False)["input_ids"]


def test_unknown_model_name() -> None:
    with pytest.raises(al.AnchorlensError, match=r"Unknown model 'no-such-model'.*smollm2-135m"):
        al.load_model("no-such-model")


@pytest.fixture
def no_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No network and an empty Hugging Face cache, whatever this machine has (fails at once, never hangs)."""
    import huggingface_hub.constants as hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))


@pytest.mark.parametrize("backend", ["hooked", "bridge"])
def test_hub_model_without_network_says_what_loads_offline(no_hub: None, backend: str) -> None:
    with pytest.raises(al.AnchorlensError, match=r"Could not load 'gpt2' from the Hugging Face hub") as info:
        load_model("gpt2", backend=backend, device="cpu")
    message = str(info.value)
    assert "load_model('smollm2-135m')" in message and "backend='bridge'" in message
    assert "HookedTransformer.from_pretrained('gpt2', hf_model=" in message
    assert isinstance(info.value.__cause__, OSError)


def test_local_model_folder_loads_through_the_bridge(no_hub: None, tmp_path: Path) -> None:
    """What the offline error message advises: a model saved on disk loads with backend='bridge'."""
    folder = tmp_path / "model"
    tiny_hf_model("llama").save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    model = load_model(str(folder), backend="bridge", device="cpu")
    assert is_bridge(model) and model.cfg.default_prepend_bos is False
    with pytest.raises(al.AnchorlensError, match="A local model folder loads with backend='bridge'"):
        load_model(str(folder), backend="hooked")


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ANCHORLENS_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path


@pytest.mark.real
@pytest.mark.slow  # dequantizes the GGUF file again (about 26 s on 2 CPU cores)
def test_offline_model_matches_dequantized_hf_logits(smollm2) -> None:  # type: ignore[no-untyped-def]
    hf, tok = load_smollm2_hf()
    text = "Review: a moving, wonderful film\nSentiment: Positive\nReview: dull and long\nSentiment:"
    ids = torch.tensor([tok(text, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        ref = hf(ids).logits
        got = smollm2(ids)
    diff = (ref - got).abs().max().item()
    print(f"max |logit diff| HF vs HookedTransformer: {diff:.2e}")
    assert diff < 1e-3
    assert torch.equal(ref.argmax(-1), got.argmax(-1))
    cfg = smollm2.cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head) == (30, 9, 3, 64)
    assert cfg.default_prepend_bos is False


@pytest.mark.real
@pytest.mark.slow
def test_offline_model_second_load_is_cached(smollm2) -> None:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    again = al.load_model("smollm2-135m", device="cpu")
    print(f"cached load: {time.perf_counter() - t0:.1f} s")
    assert torch.equal(again.W_E, smollm2.W_E)
    assert torch.equal(again.blocks[3].attn.W_Q, smollm2.blocks[3].attn.W_Q)


@pytest.mark.parametrize("kind", ["gpt2_like", "llama_like"])
def test_fast_layout_is_bit_identical_and_copies_no_weights(kind: str) -> None:
    rotary = kind == "llama_like"
    kwargs = {"positional_embedding_type": "rotary", "n_key_value_heads": 2} if rotary else {}
    fast = al.tiny_model(**kwargs)
    plain = al.tiny_model(**kwargs)
    for p in plain.parameters():  # TransformerLens' own layout
        p.data = p.data.contiguous()
    tokens = torch.tensor([[3, 9, 4, 7, 1, 8, 2]])
    assert torch.equal(fast(tokens), plain(tokens))
    assert all(torch.equal(fast.state_dict()[k], v) for k, v in plain.state_dict().items())
    assert al.fast_layout(fast) is fast  # idempotent
    assert torch.equal(fast(tokens), plain(tokens))

    weight_shapes = {tuple(p.shape) for p in fast.parameters() if p.dim() >= 2}
    weight_shapes |= {(s[0] * s[2], s[1]) for s in weight_shapes if len(s) == 3}  # rearranged Q/K/V
    weight_shapes |= {(s[2], s[0] * s[1]) for s in weight_shapes if len(s) == 3}  # rearranged O
    weight_shapes |= {s[::-1] for s in weight_shapes if len(s) == 2}  # transposed

    def copied_weights(model: torch.nn.Module) -> int:
        with torch.profiler.profile(record_shapes=True) as prof, torch.no_grad():
            model(tokens)
        return sum(
            e.count
            for e in prof.key_averages(group_by_input_shape=True)
            if e.key == "aten::copy_" and e.input_shapes and tuple(e.input_shapes[0]) in weight_shapes
        )

    assert copied_weights(plain) > 0  # TransformerLens copies weights on every forward...
    assert copied_weights(fast) == 0  # ...unless they are stored in the layout it reads
