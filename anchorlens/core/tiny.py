"""Tiny random models for tests and examples: an offline byte-level tokenizer in which chosen words are single
tokens (:func:`tiny_tokenizer`), a small ``HookedTransformer`` (:func:`tiny_model`, GPT-2-like or Llama-like
with grouped-query attention), and random Hugging Face models (:func:`tiny_hf_model`) for the
``TransformerBridge`` (:func:`tiny_bridge`). Nothing touches the network.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from anchorlens.core.backends import check_backend, quiet_deprecation
from anchorlens.core.models import bridge_from_hf, fast_layout
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model

TinyArchitecture = Literal["llama", "gpt2", "gptj"]

TINY_WORDS: tuple[str, ...] = (
    "Review", "Sentiment", "Question", "Answer", "Type", "Article", "Dialogue", "Emotion", "Input",
    "Label", " Positive", " Negative", " Abbreviation", " Entity", " Description", " Person",
    " Location", " Number", " World", " Sports", " Business", " Technology", " Others", " Happy",
    " Sad", " Angry", " good", " bad", " movie", " film", " great", " the", " a", " is", " was",
    " not", " very", " and", " it", " of", " to", " what", " who", " where", " game", " team",
    " market", " stock", " happy", " sad", " angry", " yes", " no",
)  # fmt: skip


def tiny_tokenizer(words: Sequence[str] = TINY_WORDS) -> Any:
    """An offline byte-level BPE tokenizer (GPT-2 pre-tokenization) in which each of ``words`` is one
    token; other text splits into printable-ASCII bytes, and characters outside printable ASCII become
    ``<unk>`` (so "not in the vocabulary" can be tested). Deterministic, built in memory."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    mapping = _bytes_to_unicode()
    allowed = [mapping[b] for b in [9, 10, *range(32, 127)]]
    vocab: dict[str, int] = {"<|endoftext|>": 0, "<unk>": 1}
    for ch in allowed:
        vocab.setdefault(ch, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in words:
        sym = "".join(mapping[b] for b in word.encode("utf-8"))
        for i in range(2, len(sym) + 1):
            pair = (sym[: i - 1], sym[i - 1])
            if sym[:i] not in vocab:
                vocab[sym[:i]] = len(vocab)
                merges.append(pair)
    model = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>")
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        padding_side="right",
    )
    # HookedTransformer re-loads a tokenizer "with BOS" from ``name_or_path`` unless it says it adds
    # BOS itself; this one lives in memory (and never adds special tokens), so tell TL to keep it.
    fast.init_kwargs.update(name_or_path="anchorlens-tiny", add_bos_token=True)
    return fast


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def tiny_model(
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_key_value_heads: int | None = None,
    positional_embedding_type: str = "standard",
    n_ctx: int = 256,
    attn_only: bool = False,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
) -> Any:
    """A small random model with :func:`tiny_tokenizer`, for tests and examples.

    ``positional_embedding_type="rotary"`` with ``n_key_value_heads`` gives a Llama-like model with
    grouped-query attention; the default is GPT-2-like (absolute positions, LayerNorm). ``backend="bridge"``
    gives a ``TransformerBridge`` over a random Hugging Face Llama or GPT-2 (:func:`tiny_bridge`).
    """
    if check_backend(backend) == "bridge":
        if attn_only:
            raise AnchorlensError(
                "attn_only tiny models are HookedTransformer's; the Bridge wraps HF models."
            )
        arch: TinyArchitecture = "llama" if positional_embedding_type == "rotary" else "gpt2"
        return tiny_bridge(
            arch, n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_key_value_heads=n_key_value_heads,
            n_ctx=n_ctx, seed=seed, dtype=dtype,
        )  # fmt: skip
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    tokenizer = tiny_tokenizer()
    rotary = positional_embedding_type == "rotary"
    cfg = HookedTransformerConfig(
        model_name="anchorlens-tiny",
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=d_model // n_heads,
        n_key_value_heads=n_key_value_heads,
        d_mlp=None if attn_only else 4 * d_model,
        attn_only=attn_only,
        d_vocab=len(tokenizer),
        n_ctx=n_ctx,
        act_fn="silu" if rotary else "gelu_new",
        normalization_type="RMS" if rotary else "LN",
        positional_embedding_type=positional_embedding_type,
        rotary_dim=d_model // n_heads if rotary else None,
        gated_mlp=rotary and not attn_only,
        final_rms=rotary,
        default_prepend_bos=False,
        tokenizer_prepends_bos=False,
        seed=seed,
        device="cpu",
        dtype=dtype,
        initializer_range=0.1,
    )
    with quiet_deprecation():
        model = HookedTransformer(cfg, tokenizer, default_padding_side="right")
    model.eval()
    return fast_layout(model)


def tiny_hf_model(
    architecture: TinyArchitecture,
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_key_value_heads: int | None = None,
    n_ctx: int = 256,
    seed: int = 0,
    d_vocab: int | None = None,
) -> Any:
    """A random Hugging Face causal LM sized for :func:`tiny_tokenizer`: ``"llama"`` (rotary, RMSNorm,
    grouped-query attention with ``n_key_value_heads``), ``"gpt2"`` or ``"gptj"`` (the paper's second
    model, whose Bridge attention delegates to Hugging Face)."""
    from transformers import (
        GPT2Config,
        GPT2LMHeadModel,
        GPTJConfig,
        GPTJForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
    )  # fmt: skip

    vocab = d_vocab if d_vocab is not None else len(tiny_tokenizer())
    torch.manual_seed(seed)
    common: dict[str, Any] = dict(vocab_size=vocab, initializer_range=0.1, bos_token_id=0, eos_token_id=0)
    if architecture == "llama":
        cfg = LlamaConfig(
            hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=n_layers,
            num_attention_heads=n_heads, num_key_value_heads=n_key_value_heads or n_heads,
            max_position_embeddings=n_ctx, pad_token_id=0, **common,
        )  # fmt: skip
        model: Model = LlamaForCausalLM(cfg)
    elif architecture == "gpt2":
        model = GPT2LMHeadModel(
            GPT2Config(n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=n_ctx, **common)
        )
    elif architecture == "gptj":
        gptj = GPTJConfig(
            n_embd=d_model, n_layer=n_layers, n_head=n_heads, n_positions=n_ctx,
            rotary_dim=d_model // n_heads, **common,
        )  # fmt: skip
        model = GPTJForCausalLM(gptj)
    else:
        raise AnchorlensError(f"Unknown tiny architecture {architecture!r}: use 'llama', 'gpt2' or 'gptj'.")
    return model.to(torch.float32).eval()


def tiny_bridge(
    architecture: TinyArchitecture = "llama", *, dtype: torch.dtype = torch.float32, **sizes: Any
) -> Any:
    """A ``TransformerBridge`` over :func:`tiny_hf_model` with :func:`tiny_tokenizer` (no hub call)."""
    hf_model = tiny_hf_model(architecture, **sizes).to(dtype)
    return bridge_from_hf(hf_model, tiny_tokenizer(), f"anchorlens-tiny-{architecture}", dtype)
