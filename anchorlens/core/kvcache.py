"""Key/value caches, the one place that knows how each backend caches keys and values.

Three things use a cache: the loop's prefix reuse (the shared demonstrations run once, each query on top of
their keys and values; :mod:`anchorlens.core.prefix`), compression (a cache of the kept demonstration
positions) and greedy decoding (:mod:`anchorlens.core.generate`). They use:

- :class:`GrowingCache` (:func:`empty_cache`): a cache that forward passes extend, passed as
  ``past_kv_cache=`` (its :meth:`~GrowingCache.forward_kwargs`); one pass of a prefix fills it
  (:meth:`~GrowingCache.filled` gives the :class:`PrefixCache`), or decoding extends it token by token;
- :class:`PrefixCache`: the frozen keys and values of one prefix; :meth:`PrefixCache.forward_kwargs` runs
  ``n`` query rows on it, :meth:`PrefixCache.select` keeps some positions (compression);
- :func:`prefix_batch` / :func:`query_batch`: the ``"prefix"`` batch (the demonstrations alone) and the
  ``"query"`` batches (query tokens on a cache) as :class:`~anchorlens.core.batch.PromptBatch` objects;
- :func:`forward_arguments`: the keyword arguments of one forward pass, cache included, for the model's
  backend. Every forward pass of anchorlens goes through it.

HookedTransformer caches keys before rotary and derives every position from the cumulative sum of the
attention mask, cached entries included; a cache that keeps only some prefix positions (compression) stores
each kept position's gap to the previous one as its mask entry, so the cumulative sum still gives the
original positions. The Bridge takes a Hugging Face cache (keys after rotary) and explicit ``position_ids``:
:func:`forward_arguments` rotates TransformerLens-layout keys to their positions, and a Hugging Face cache
filled by the Bridge is read back in TransformerLens' layout (keys rotated back to position 0).

Coordinates on a ``"query"`` batch over a full-prefix cache (``P`` cached tokens, right-padded queries):
``hook_pattern`` is ``[batch, head, query_len, P + query_len]``; row ``i`` is prompt position ``P + i``
(``batch.offset = -P``) and key column ``j`` is prompt position ``j``, so ``batch.label_positions`` are the
label words' prompt positions and ``batch.target`` is the target's row.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.core.backends import architecture, is_bridge, is_rotary
from anchorlens.core.batch import PromptBatch
from anchorlens.core.prompts import IclPrompt
from anchorlens.errors import AnchorlensError
from anchorlens.types import Mask, Model

CACHE_ARGUMENT = "past_kv_cache"
"""The forward keyword that carries a cache into :func:`forward_arguments`."""


def shared_prefix(prompts: Sequence[IclPrompt]) -> tuple[int, ...] | None:
    """The demonstration tokens every prompt starts with (``query_start`` and the tokens before it equal),
    or None when they differ, are empty, or some prompt has no query token after them."""
    if not prompts or prompts[0].query_start < 1:
        return None
    start = prompts[0].query_start
    prefix = prompts[0].tokens[:start]
    for p in prompts:
        if p.query_start != start or len(p) <= start or p.tokens[:start] != prefix:
            return None
    return prefix


def supports_prefix_cache(model: Model) -> bool:
    """Whether the loop may run queries on a :class:`PrefixCache` of ``model`` (a HookedTransformer with
    absolute or rotary positions; the Bridge runs full prompts, compression's cache excepted)."""
    cfg = getattr(model, "cfg", None)
    return (
        not is_bridge(model)
        and hasattr(model, "blocks")
        and hasattr(model, "get_pos_offset")
        and getattr(cfg, "positional_embedding_type", None) in ("standard", "rotary")
    )


def model_device(model: Model) -> Any:
    """The device a model's inputs go to (``cfg.device``, else its first parameter's)."""
    device = getattr(getattr(model, "cfg", None), "device", None)
    return device if device is not None else next(model.parameters()).device


@dataclass(frozen=True)
class PrefixCache:
    """The cached keys and values of one prefix, every layer, one row.

    Attributes:
        keys, values: Per layer ``[1, pos, kv_head, d_head]`` (keys before rotary).
        mask: ``[pos]`` attention-mask entries of the cached positions (their cumulative sum gives the
            positions the queries see).
    """

    keys: tuple[Tensor, ...] = field(repr=False)
    values: tuple[Tensor, ...] = field(repr=False)
    mask: Int[Tensor, " pos"]

    def select(self, positions: Sequence[int]) -> PrefixCache:
        """The cached entries at ``positions`` (sorted) of a full-prefix cache, copied; each one's mask entry
        is its gap to the previous kept position, so the cumulative sum still gives the original positions."""
        idx = torch.tensor(list(positions), device=self.mask.device)
        keys = tuple(k[:, idx].clone() for k in self.keys)
        values = tuple(v[:, idx].clone() for v in self.values)
        return PrefixCache(keys, values, torch.diff(idx, prepend=torch.tensor([-1], device=idx.device)))

    def __len__(self) -> int:
        return int(self.mask.shape[0])

    def with_mask(self, mask: Int[Tensor, " pos"]) -> PrefixCache:
        """The same keys and values with other mask entries (e.g. all ones: compacted positions)."""
        return replace(self, mask=mask)

    def detached(self) -> PrefixCache:
        """The cache without autograd history (to keep across forward passes)."""
        return PrefixCache(
            tuple(k.detach() for k in self.keys), tuple(v.detach() for v in self.values), self.mask
        )

    def forward_kwargs(self, n: int) -> dict[str, Any]:
        """Forward keyword arguments running ``n`` query rows on this cache (frozen, expanded, no copy);
        :func:`forward_arguments` turns them into the backend's."""
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

        entries = [
            TransformerLensKeyValueCacheEntry(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1), frozen=True)
            for k, v in zip(self.keys, self.values, strict=True)
        ]
        cache = TransformerLensKeyValueCache(entries, self.mask[None].expand(n, -1), frozen=True)
        return {CACHE_ARGUMENT: cache}


class GrowingCache:
    """A key/value cache that each forward pass extends (batch 1): TransformerLens' own on HookedTransformer,
    a Hugging Face ``DynamicCache`` on the Bridge. Pass :meth:`forward_kwargs` to a forward pass (through
    :func:`forward_arguments`): the pass sees the cached tokens before its own and appends its keys and
    values. Positions continue after the cached tokens."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.bridge = is_bridge(model)
        if self.bridge:
            from transformers import DynamicCache

            self.cache: Any = DynamicCache(config=model.original_model.config)
        else:
            from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

            self.cache = TransformerLensKeyValueCache.init_cache(model.cfg, model_device(model), batch_size=1)

    def __len__(self) -> int:
        """The number of cached positions."""
        if self.bridge:
            return int(self.cache.get_seq_length())
        return int(self.cache.previous_attention_mask.shape[1])

    def forward_kwargs(self) -> dict[str, Any]:
        """The forward keyword arguments that run a pass on (and into) this cache."""
        return {CACHE_ARGUMENT: self}

    def arguments(self, attention_mask: Mask, rest: dict[str, Any]) -> dict[str, Any]:
        """The backend's forward arguments for new tokens with ``attention_mask`` after the cached ones."""
        if not self.bridge:
            return {"attention_mask": attention_mask, **rest, CACHE_ARGUMENT: self.cache}
        n_cached = len(self)
        seen = torch.ones(attention_mask.shape[0], n_cached, dtype=attention_mask.dtype)
        full = torch.cat([seen.to(attention_mask.device), attention_mask], dim=1)
        return {
            **rest,
            **hf_cache_kwargs(self.model, self.cache),
            "position_ids": (full.cumsum(-1) - 1)[:, n_cached:],
            "attention_mask": (full > 0).long(),
        }

    def filled(self) -> PrefixCache:
        """The cached keys and values (row 0) as a :class:`PrefixCache`; keeps their autograd history.

        Raises:
            AnchorlensError: on the Bridge, the Hugging Face cache stayed empty (the installed TransformerLens
                and transformers do not hand it to the attention).
        """
        if not self.bridge:
            keys = tuple(e.past_keys[:1] for e in self.cache.entries)
            values = tuple(e.past_values[:1] for e in self.cache.entries)
            return PrefixCache(keys, values, self.cache.previous_attention_mask[0])
        n = len(self)
        if n == 0:
            raise AnchorlensError(
                "The Bridge's Hugging Face cache is still empty after the prefix pass: this TransformerLens/"
                "transformers pair does not hand the cache to the attention (past_key_values vs cache=)."
            )
        hf_keys: list[Tensor] = []
        hf_values: list[Tensor] = []
        for layer in self.cache.layers:
            k = layer.keys[:1]  # [1, kv_head, pos, d_head], after rotary at positions 0..pos-1
            back = -torch.arange(k.shape[2], device=k.device)[None]
            hf_keys.append(rotate_keys(self.model, k, back).transpose(1, 2))
            hf_values.append(layer.values[:1].transpose(1, 2))
        mask = torch.ones(n, dtype=torch.long, device=hf_keys[0].device)
        return PrefixCache(tuple(hf_keys), tuple(hf_values), mask)


def empty_cache(model: Model) -> GrowingCache:
    """A fresh cache that one forward pass of a prefix fills (``**cache.forward_kwargs()``)."""
    return GrowingCache(model)


def forward_arguments(model: Model, attention_mask: Mask, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The keyword arguments of a forward pass of tokens with ``attention_mask`` on ``model``'s backend.

    ``kwargs[past_kv_cache]`` may be a :class:`GrowingCache` (a pass extending it) or the frozen cache of
    :meth:`PrefixCache.forward_kwargs`. HookedTransformer takes TransformerLens' caches as they are; on the
    Bridge a frozen cache becomes a Hugging Face cache with the explicit ``position_ids`` and attention mask
    that TransformerLens would derive (positions: cumulative sum of the mask - 1)."""
    cache = kwargs.get(CACHE_ARGUMENT)
    rest = {k: v for k, v in kwargs.items() if k != CACHE_ARGUMENT}
    if isinstance(cache, GrowingCache):
        return cache.arguments(attention_mask, rest)
    if cache is None or not is_bridge(model):
        return {"attention_mask": attention_mask, **kwargs}
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


def prefix_batch(prompt: IclPrompt, device: Any) -> PromptBatch:
    """The demonstrations of ``prompt`` alone, one ``"prefix"`` row (target: the last demonstration token;
    positions are prompt positions)."""
    n_demo = prompt.query_start
    tokens = torch.tensor([prompt.tokens[:n_demo]], device=device)
    return PromptBatch(
        tokens=tokens,
        attention_mask=torch.ones_like(tokens),
        target=torch.tensor([n_demo - 1], device=device),
        label_positions=torch.tensor([prompt.label_positions], dtype=torch.long, device=device),
        demo_labels=torch.tensor([prompt.demo_labels], dtype=torch.long, device=device),
        offset=torch.zeros(1, dtype=torch.long, device=device),
        prompts=(prompt,),
        indices=(),
        kind="prefix",
    )


def query_batch(
    prompts: Sequence[IclPrompt],
    index: Sequence[int],
    pad: int,
    device: Any,
    *,
    columns: Mapping[int, int] | None = None,
    first_mask: int = 1,
) -> PromptBatch:
    """The prompts' query tokens, right-padded, as one ``"query"`` batch on a prefix cache.

    Args:
        columns: Prompt position -> key column of the cached positions (default: the full prefix, column =
            position); a label word not cached gets column -1.
        first_mask: The attention-mask entry of each query's first token (its gap to the last cached
            position: 1 after a full prefix).
    """
    width = max(len(p) - p.query_start for p in prompts)
    tokens = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        q = p.tokens[p.query_start :]
        tokens[i, : len(q)] = torch.tensor(q)
        mask[i, : len(q)] = 1
        mask[i, 0] = first_mask
    labels = [
        [pos if columns is None else columns.get(pos, -1) for pos in p.label_positions] for p in prompts
    ]
    n = len(prompts)
    return PromptBatch(
        tokens=tokens.to(device),
        attention_mask=mask.to(device),
        target=torch.tensor([len(p) - p.query_start - 1 for p in prompts], device=device),
        label_positions=torch.tensor(labels, dtype=torch.long, device=device).reshape(n, -1),
        demo_labels=torch.tensor([p.demo_labels for p in prompts], dtype=torch.long, device=device).reshape(
            n, -1
        ),
        offset=torch.tensor([-p.query_start for p in prompts], dtype=torch.long, device=device),
        prompts=tuple(prompts),
        indices=tuple(index),
        kind="query",
    )
