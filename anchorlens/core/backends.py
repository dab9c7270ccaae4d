"""What differs between TransformerLens' two front-ends, in one place: ``HookedTransformer`` ("hooked",
TransformerLens 3.x only) and ``TransformerBridge`` ("bridge", TransformerLens 3.9 and 4.x).

Hook functions are the same code on both: the Bridge has ``blocks.{l}.attn.hook_pattern``,
``hook_attn_scores`` (``[batch, head, query_pos, key_pos]``), ``hook_q/k/v`` and, on rotary models,
``hook_rot_q/k`` (``[batch, pos, heads, d_head]``, key/value heads under grouped-query attention), and the
same ``hooks()`` / ``run_with_hooks`` context. What differs, read off TL 3.9.0's and 4.3.0's source:

- an edit at ``hook_pattern`` only takes effect where TL recomputes attention itself
  (``PositionEmbeddingsAttentionBridge``: Llama/SmolLM2, Qwen, Mistral, Gemma; ``JointQKVAttentionBridge``:
  GPT-2; ``JointQKVPositionEmbeddingsAttentionBridge``: NeoX, Phi-3). The plain ``AttentionBridge``
  (GPT-J, GPT-Neo, OPT) delegates to Hugging Face: edits are discarded, so
  :func:`require_attention_edits` refuses such a model, and checks once per model and hook point that an
  edit changes the logits;
- ``W_Q``/``W_K`` under grouped-query attention are per key/value head on the Bridge and repeated to
  ``n_heads`` on HookedTransformer (:func:`per_query_head`);
- the Bridge takes a Hugging Face key/value cache and explicit ``position_ids``, not
  ``TransformerLensKeyValueCache``; ``fast_layout`` and ``stop_at_layer`` tricks are HookedTransformer's.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import sys
import weakref
from collections.abc import Iterable
from functools import cache
from typing import Any, Literal, get_args

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.errors import AnchorlensError
from anchorlens.types import Model

Backend = Literal["hooked", "bridge"]
BACKENDS: tuple[str, ...] = get_args(Backend)
EDIT_POINTS = ("hook_pattern", "hook_attn_scores")
"""The attention hook points anchorlens edits (and so checks before an experiment edits them)."""

_DELEGATING = ("AttentionBridge",)
"""Bridge attention classes that hand the whole attention to Hugging Face: hook edits are lost there."""

_CHECKED: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


def tl_version() -> str:
    """The installed TransformerLens release, e.g. ``"3.9.0"``."""
    try:
        return importlib.metadata.version("transformer-lens")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "unknown"


@cache
def hooked_available() -> bool:
    """Whether the installed TransformerLens still has ``HookedTransformer`` (3.x; 4.0 removed it)."""
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def default_backend() -> Backend:
    """``"hooked"`` where TransformerLens 3.x is installed, ``"bridge"`` on 4.x."""
    return "hooked" if hooked_available() else "bridge"


def check_backend(backend: str | None) -> Backend:
    """``backend`` validated (``None``: :func:`default_backend`).

    Raises:
        AnchorlensError: an unknown backend, or ``"hooked"`` on TransformerLens 4.x.
    """
    if backend is None:
        return default_backend()
    if backend == "bridge":
        return "bridge"
    if backend == "hooked":
        if not hooked_available():
            raise AnchorlensError(
                f"backend 'hooked' needs HookedTransformer, which TransformerLens 3.x has and the installed "
                f"TransformerLens {tl_version()} does not (4.0 removed it). Use backend 'bridge' "
                "(TransformerBridge), or install transformer-lens>=3,<4."
            )
        return "hooked"
    raise AnchorlensError(
        f"Unknown backend {backend!r}: use 'hooked' (HookedTransformer, TransformerLens 3.x) or 'bridge' "
        "(TransformerBridge, TransformerLens 3.9 and 4.x)."
    )


def is_bridge(model: Model) -> bool:
    """Whether ``model`` is a ``TransformerBridge`` (without importing the Bridge when nothing loaded it)."""
    mod = sys.modules.get("transformer_lens.model_bridge.bridge")
    return mod is not None and isinstance(model, mod.TransformerBridge)


def backend_of(model: Model) -> Backend:
    """``"bridge"`` for a ``TransformerBridge``, else ``"hooked"`` (HookedTransformer and its subclasses)."""
    return "bridge" if is_bridge(model) else "hooked"


def architecture(model: Model) -> str:
    """The Hugging Face architecture name (``"LlamaForCausalLM"``...), or the model's class name."""
    cfg = model.cfg
    name = getattr(cfg, "architecture", None) or getattr(cfg, "original_architecture", None)
    return str(name or type(model).__name__)


def n_key_value_heads(model: Model) -> int:
    """Key/value heads per layer (``n_heads`` without grouped-query attention)."""
    return int(getattr(model.cfg, "n_key_value_heads", None) or model.cfg.n_heads)


def is_rotary(model: Model) -> bool:
    """Whether queries and keys are rotated (then ``hook_rot_q/k`` hold them after RoPE)."""
    return getattr(model.cfg, "positional_embedding_type", "standard") == "rotary"


def per_query_head(
    weight: Float[Tensor, "*layer kv_head d_model d_head"], model: Model
) -> Float[Tensor, "*layer head d_model d_head"]:
    """A ``W_K``/``W_V`` as HookedTransformer gives it: repeated from key/value heads to ``n_heads``
    (the Bridge keeps one per key/value head under grouped-query attention; a no-op otherwise)."""
    n_heads = int(model.cfg.n_heads)
    if weight.shape[-3] == n_heads:
        return weight
    return weight.repeat_interleave(n_heads // weight.shape[-3], dim=-3)


def attention_class(model: Model) -> str:
    """The class of layer 0's attention module (e.g. ``PositionEmbeddingsAttentionBridge``)."""
    return type(model.blocks[0].attn).__name__


def require_attention_edits(model: Model, hook_names: Iterable[str] = ("hook_pattern",)) -> None:
    """Refuse a model on which editing attention at these hook points would silently change nothing.

    ``hook_names`` may be full names (``blocks.3.attn.hook_pattern``); only :data:`EDIT_POINTS` count.
    A Bridge model whose attention is delegated to Hugging Face is refused outright; otherwise, once per
    model and point, zeroing that point in every layer must change the logits of a short input.

    Raises:
        AnchorlensError: naming the architecture and the attention class.
    """
    points = {p for name in hook_names for p in EDIT_POINTS if name.endswith(p)}
    done = _CHECKED.setdefault(model, set())
    todo = sorted(points - done)
    if not todo:
        return
    if is_bridge(model) and attention_class(model) in _DELEGATING:
        raise AnchorlensError(
            f"{architecture(model)} through TransformerBridge uses {attention_class(model)}, which hands "
            "attention to Hugging Face: edits at hook_pattern/hook_attn_scores are discarded, so isolation, "
            "re-weighting, compression and saliency would silently measure nothing. Load it with "
            "backend='hooked' (TransformerLens 3.x), or use an architecture whose Bridge recomputes "
            "attention (Llama, Qwen, Mistral, Gemma, GPT-2, NeoX)."
        )
    for point in todo:
        if not _edit_changes_logits(model, point):
            raise AnchorlensError(
                f"An edit at {point} does not change {architecture(model)}'s logits (attention class "
                f"{attention_class(model)}, backend {backend_of(model)!r}): anchorlens' attention edits "
                "would be silent no-ops on this model."
            )
        done.add(point)


def _edit_changes_logits(model: Model, point: str) -> bool:
    """Whether zeroing ``point`` in every layer changes the logits of a short fixed input."""
    n_layers, d_vocab = int(model.cfg.n_layers), int(model.cfg.d_vocab)
    device = next(model.parameters()).device
    tokens = (torch.arange(8, device=device)[None] * 7 + 3) % d_vocab

    def zero(x: Tensor, hook: Any) -> Tensor:
        return torch.zeros_like(x)

    hooks = [(f"blocks.{layer}.attn.{point}", zero) for layer in range(n_layers)]
    with torch.no_grad():
        base = model(tokens)
        with model.hooks(fwd_hooks=hooks):
            edited = model(tokens)
    return not torch.allclose(base, edited, rtol=0.0, atol=1e-6)


# --------------------------------------------------------------------------------------------------
# Key/value caches on the Bridge: a Hugging Face cache with explicit positions


class BridgePrefixFill:
    """What :func:`anchorlens.core.kvcache.empty_cache` gives on a TransformerBridge: a Hugging Face cache that
    one forward pass of a prefix fills (``past_key_values``), read back in TransformerLens' layout
    (``entries[l].past_keys`` ``[1, pos, kv_head, d_head]``, keys before rotary, and an all-ones
    ``previous_attention_mask``), so :class:`anchorlens.core.kvcache.PrefixCache` takes it as it takes TL's."""

    def __init__(self, model: Model) -> None:
        from transformers import DynamicCache

        self.model = model
        self.hf: Any = DynamicCache(config=model.original_model.config)

    def forward_kwargs(self) -> dict[str, Any]:
        return hf_cache_kwargs(self.model, self.hf)

    @property
    def entries(self) -> list[Any]:
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

        if self.hf.get_seq_length() == 0:
            raise AnchorlensError(
                "The Bridge's Hugging Face cache is still empty after the prefix pass: this TransformerLens/"
                "transformers pair does not hand the cache to the attention (past_key_values vs cache=)."
            )
        out = []
        for layer in self.hf.layers:
            keys = layer.keys  # [1, kv_head, pos, d_head], after rotary at positions 0..pos-1
            back = -torch.arange(keys.shape[2], device=keys.device)[None]
            pre = rotate_keys(self.model, keys, back).transpose(1, 2)
            out.append(TransformerLensKeyValueCacheEntry(pre, layer.values.transpose(1, 2), frozen=True))
        return out

    @property
    def previous_attention_mask(self) -> Tensor:
        n = self.hf.get_seq_length()
        return torch.ones(1, n, dtype=torch.long, device=self.hf.layers[0].keys.device)


def hf_cache_kwargs(model: Model, cache: Any) -> dict[str, Any]:
    """Forward keyword arguments handing a Bridge model the Hugging Face ``cache``.

    transformers 5.24 renamed the argument to ``cache`` and passes it down under that name, while the
    attention bridges of TransformerLens 3.9 and 4.3 read ``past_key_values`` or ``layer_past``: with either
    name alone the cache stays empty and a query on it silently ignores the prefix (measured on tiny Llama and
    GPT-2 Bridges: logits off by 3.8). So it also goes as ``layer_past``, which reaches the attention bridge.
    """
    params = inspect.signature(model.original_model.forward).parameters
    if "cache" in params:
        return {"cache": cache, "layer_past": cache, "use_cache": True}
    return {"past_key_values": cache, "use_cache": True}


def rotate_keys(
    model: Model, keys: Float[Tensor, "batch kv_head pos d_head"], positions: Tensor
) -> Float[Tensor, "batch kv_head pos d_head"]:
    """``keys`` rotated by ``positions`` ``[batch, pos]`` with the Hugging Face model's own rotary
    embedding (negative positions undo a rotation); unchanged on a model without rotary positions."""
    if not is_rotary(model):
        return keys
    rotary = next(
        (m for m in model.original_model.modules() if type(m).__name__.endswith("RotaryEmbedding")), None
    )
    if rotary is None:
        raise AnchorlensError(f"No rotary embedding module found in {architecture(model)}'s HF model.")
    cos, sin = rotary(keys, positions)  # [batch, pos, rotary_dim]
    cos, sin = cos[:, None].to(keys.dtype), sin[:, None].to(keys.dtype)
    d = cos.shape[-1]
    part, rest = keys[..., :d], keys[..., d:]
    half = torch.cat([-part[..., d // 2 :], part[..., : d // 2]], dim=-1)  # HF's rotate_half
    return torch.cat([part * cos + half * sin, rest], dim=-1)


def forward_arguments(model: Model, attention_mask: Tensor, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a forward pass of tokens with ``attention_mask``: as given on
    HookedTransformer; on the Bridge a ``past_kv_cache`` (TransformerLens' cache, or a
    :class:`BridgePrefixFill` to fill) becomes a Hugging Face cache with the explicit ``position_ids`` and
    the attention mask that TransformerLens would derive (positions: cumulative sum of the mask - 1)."""
    cache = kwargs.get("past_kv_cache")
    if cache is None or not is_bridge(model):
        return {"attention_mask": attention_mask, **kwargs}
    rest = {k: v for k, v in kwargs.items() if k != "past_kv_cache"}
    if isinstance(cache, BridgePrefixFill):
        return {"attention_mask": attention_mask, **rest, **cache.forward_kwargs()}
    from transformers import DynamicCache

    full = torch.cat([cache.previous_attention_mask.to(attention_mask), attention_mask], dim=1)
    positions = full.cumsum(-1) - 1
    n_cached = cache.previous_attention_mask.shape[1]
    hf = DynamicCache(config=model.original_model.config)
    for layer, entry in enumerate(cache.entries):
        keys = rotate_keys(model, entry.past_keys.transpose(1, 2), positions[:, :n_cached])
        hf.update(keys, entry.past_values.transpose(1, 2), layer)
    return {
        **rest,
        **hf_cache_kwargs(model, hf),
        "position_ids": positions[:, n_cached:],
        "attention_mask": (full > 0).long(),
    }
