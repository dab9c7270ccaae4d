"""Tiny random models for tests and examples: an offline byte-level tokenizer in which chosen words are single
tokens (:func:`tiny_tokenizer`), a small ``HookedTransformer`` (:func:`tiny_model`, GPT-2-like, Llama-like
with grouped-query attention, or Gemma-3-like), and random Hugging Face models (:func:`tiny_hf_model`) for the
``TransformerBridge`` (:func:`tiny_bridge`). Nothing touches the network.

The Gemma-3-like model has what sets Gemma 3 apart: sliding-window (local) layers alternating with global
ones (window :data:`TINY_WINDOW` tokens, so a short prompt already reaches past it), QK norm, one key/value
head, pre- and post-norms, tied embeddings. Both backends get the same function: the HookedTransformer is
converted from the random Hugging Face ``Gemma3ForCausalLM`` by TransformerLens' own Gemma converter, with
the processing :func:`anchorlens.core.offline.load_gemma3` applies to the real model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from anchorlens.core.backends import check_backend, quiet_deprecation
from anchorlens.core.models import bridge_from_hf, fast_layout
from anchorlens.core.offline import GEMMA3_PROCESSING
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model

TinyArchitecture = Literal["llama", "gpt2", "gptj", "gemma3"]

TINY_WINDOW = 8
"""The tiny Gemma-3-like model's sliding window: its local layers see the last 8 tokens (key ``k`` is visible
from query ``q`` when ``0 <= q - k < 8``), as Gemma 3's see the last 512."""

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
    architecture: TinyArchitecture | None = None,
) -> Any:
    """A small random model with :func:`tiny_tokenizer`, for tests and examples.

    ``positional_embedding_type="rotary"`` with ``n_key_value_heads`` gives a Llama-like model with
    grouped-query attention; the default is GPT-2-like (absolute positions, LayerNorm). ``backend="bridge"``
    gives a ``TransformerBridge`` over a random Hugging Face Llama or GPT-2 (:func:`tiny_bridge`).
    ``architecture`` names the family instead: ``"gpt2"``, ``"llama"``, ``"gptj"`` (Bridge only) or
    ``"gemma3"`` (:func:`tiny_gemma3`: sliding-window and global layers, QK norm, one key/value head unless
    ``n_key_value_heads`` says otherwise; either backend, the same function on both).
    """
    chosen = check_backend(backend)
    if architecture in ("llama", "gpt2"):
        positional_embedding_type = "rotary" if architecture == "llama" else "standard"
    elif architecture is not None and (attn_only or (architecture == "gptj" and chosen == "hooked")):
        raise AnchorlensError(
            f"tiny_model(architecture={architecture!r}) wraps a Hugging Face model: attn_only is not "
            "available" + (", and GPT-J needs backend='bridge'." if architecture == "gptj" else ".")
        )
    if architecture == "gemma3":
        return tiny_gemma3(
            n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_key_value_heads=n_key_value_heads or 1,
            n_ctx=n_ctx, seed=seed, dtype=dtype, backend=chosen,
        )  # fmt: skip
    if chosen == "bridge":
        if attn_only:
            raise AnchorlensError(
                "attn_only tiny models are HookedTransformer's; the Bridge wraps HF models."
            )
        arch: TinyArchitecture = architecture or (
            "llama" if positional_embedding_type == "rotary" else "gpt2"
        )
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
    sliding_window: int = TINY_WINDOW,
) -> Any:
    """A random Hugging Face causal LM sized for :func:`tiny_tokenizer`: ``"llama"`` (rotary, RMSNorm,
    grouped-query attention with ``n_key_value_heads``), ``"gpt2"``, ``"gptj"`` (the paper's second
    model, whose Bridge attention delegates to Hugging Face) or ``"gemma3"`` (``Gemma3ForCausalLM``:
    every second layer global, the others see the last ``sliding_window`` tokens; QK norm; one key/value
    head unless ``n_key_value_heads`` says otherwise; tied embeddings)."""
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
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
    elif architecture == "gemma3":
        d_head = d_model // n_heads
        gemma = Gemma3TextConfig(
            hidden_size=d_model, intermediate_size=4 * d_model, num_hidden_layers=n_layers,
            num_attention_heads=n_heads, num_key_value_heads=n_key_value_heads or 1, head_dim=d_head,
            query_pre_attn_scalar=d_head, max_position_embeddings=n_ctx, sliding_window=sliding_window,
            layer_types=[_GEMMA_LAYER_TYPES[(i + 1) % 2 == 0] for i in range(n_layers)],
            tie_word_embeddings=True, pad_token_id=0, **common,
        )  # fmt: skip
        model = Gemma3ForCausalLM(gemma)
        model.config.architectures = ["Gemma3ForCausalLM"]  # TransformerBridge dispatches on it
    else:
        raise AnchorlensError(
            f"Unknown tiny architecture {architecture!r}: use 'llama', 'gpt2', 'gptj' or 'gemma3'."
        )
    return model.to(torch.float32).eval()


def tiny_bridge(
    architecture: TinyArchitecture = "llama", *, dtype: torch.dtype = torch.float32, **sizes: Any
) -> Any:
    """A ``TransformerBridge`` over :func:`tiny_hf_model` with :func:`tiny_tokenizer` (no hub call)."""
    hf_model = tiny_hf_model(architecture, **sizes).to(dtype)
    return bridge_from_hf(hf_model, tiny_tokenizer(), f"anchorlens-tiny-{architecture}", dtype)


_GEMMA_LAYER_TYPES = ("sliding_attention", "full_attention")
"""Hugging Face's names of a Gemma 3 layer's attention, local then global."""


def tiny_gemma3(
    *,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_key_value_heads: int = 1,
    n_ctx: int = 256,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    backend: str | None = None,
    sliding_window: int = TINY_WINDOW,
) -> Any:
    """A Gemma-3-like random model (see the module docstring) on either backend, with the same weights.

    The HookedTransformer is built as TransformerLens builds ``google/gemma-3-270m``: a config like its
    built-in one (``attn_types``, ``window_size``, ``use_qk_norm``, ``rotary_base_local``, pre- and post-norms),
    the weights converted by ``convert_gemma_weights`` and processed as
    :data:`anchorlens.core.offline.GEMMA3_PROCESSING` says.
    """
    hf_model = tiny_hf_model(
        "gemma3", n_layers=n_layers, d_model=d_model, n_heads=n_heads, n_key_value_heads=n_key_value_heads,
        n_ctx=n_ctx, seed=seed, sliding_window=sliding_window,
    )  # fmt: skip
    tokenizer = tiny_tokenizer()
    if check_backend(backend) == "bridge":
        return bridge_from_hf(hf_model.to(dtype), tokenizer, "anchorlens-tiny-gemma3", dtype)
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gemma import convert_gemma_weights

    hf_cfg = hf_model.config
    rope = hf_cfg.rope_parameters
    cfg = HookedTransformerConfig(
        model_name="anchorlens-tiny-gemma3",
        original_architecture="Gemma3ForCausalLM",
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_head=hf_cfg.head_dim,
        n_key_value_heads=hf_cfg.num_key_value_heads,
        d_mlp=hf_cfg.intermediate_size,
        d_vocab=hf_cfg.vocab_size,
        n_ctx=n_ctx,
        act_fn="gelu_pytorch_tanh",
        eps=hf_cfg.rms_norm_eps,
        normalization_type="RMSPre",  # RMS with its weights folded into the next layer (fold_ln)
        positional_embedding_type="rotary",
        rotary_dim=hf_cfg.head_dim,
        rotary_base=int(rope["full_attention"]["rope_theta"]),
        rotary_base_local=int(rope["sliding_attention"]["rope_theta"]),
        use_attn_scale=True,
        gated_mlp=True,
        final_rms=True,
        use_normalization_before_and_after=True,
        use_qk_norm=True,
        use_local_attn=True,
        window_size=sliding_window,
        attn_types=["local" if t == _GEMMA_LAYER_TYPES[0] else "global" for t in hf_cfg.layer_types],
        default_prepend_bos=False,
        tokenizer_prepends_bos=False,
        init_weights=False,
        device="cpu",
        dtype=dtype,
    )
    state_dict = convert_gemma_weights(hf_model, cfg)
    with quiet_deprecation():
        model = HookedTransformer(cfg, tokenizer, default_padding_side="right")
    model.load_and_process_state_dict(state_dict, **GEMMA3_PROCESSING)
    model.eval()
    return fast_layout(model)
