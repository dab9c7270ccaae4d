"""Key/value caches of a prompt prefix (the shared demonstrations), for running queries on top of them.

Every prompt of a seed shares its demonstrations, so the demonstration prefix can run once and each query on
top of its keys and values. This module is the one place that knows how a backend caches keys and values;
the rest of anchorlens uses four things:

- :func:`prefix_batch` / :func:`query_batch`: the ``"prefix"`` batch (the demonstrations alone) and the
  ``"query"`` batches (query tokens on a cache) as :class:`~anchorlens.core.prompts.PromptBatch` objects;
- :func:`empty_cache` + :meth:`PrefixCache.from_filled`: fill a cache in one forward pass of the prefix;
- :meth:`PrefixCache.forward_kwargs`: the cache expanded over ``n`` query rows, as forward keyword arguments.

TransformerLens (``HookedTransformer``) caches keys before rotary and derives every position from the
cumulative sum of the attention mask, cached entries included; a cache that keeps only some prefix positions
(compression) stores each kept position's gap to the previous one as its mask entry, so the cumulative sum
still gives the original positions.

Coordinates on a ``"query"`` batch over a full-prefix cache (``P`` cached tokens, right-padded queries):
``hook_pattern`` is ``[batch, head, query_len, P + query_len]``; row ``i`` is prompt position ``P + i``
(``batch.offset = -P``) and key column ``j`` is prompt position ``j``, so ``batch.label_positions`` are the
label words' prompt positions and ``batch.target`` is the target's row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from jaxtyping import Int
from torch import Tensor

from anchorlens.core.backends import BridgePrefixFill, is_bridge
from anchorlens.core.prompts import IclPrompt, PromptBatch
from anchorlens.types import Model


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


@dataclass(frozen=True)
class PrefixCache:
    """The cached keys and values of one prefix, every layer, one row.

    Attributes:
        keys, values: Per layer ``[1, pos, kv_head, d_head]`` (TransformerLens: keys before rotary).
        mask: ``[pos]`` attention-mask entries of the cached positions (their cumulative sum gives the
            positions the queries see).
    """

    keys: tuple[Tensor, ...] = field(repr=False)
    values: tuple[Tensor, ...] = field(repr=False)
    mask: Int[Tensor, " pos"]

    @classmethod
    def from_filled(cls, cache: Any) -> PrefixCache:
        """The first row of a cache filled by a forward pass of the prefix (:func:`empty_cache`)."""
        keys = tuple(e.past_keys[:1] for e in cache.entries)
        values = tuple(e.past_values[:1] for e in cache.entries)
        return cls(keys, values, cache.previous_attention_mask[0])

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
        """Forward keyword arguments running ``n`` query rows on this cache (frozen, expanded, no copy)."""
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

        entries = [
            TransformerLensKeyValueCacheEntry(k.expand(n, -1, -1, -1), v.expand(n, -1, -1, -1), frozen=True)
            for k, v in zip(self.keys, self.values, strict=True)
        ]
        cache = TransformerLensKeyValueCache(entries, self.mask[None].expand(n, -1), frozen=True)
        return {"past_kv_cache": cache}


def empty_cache(model: Model, batch_size: int = 1) -> Any:
    """A fresh cache that a forward pass of the prefix (``past_kv_cache=``) fills."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    if is_bridge(model):  # a Hugging Face cache, read back in TransformerLens' layout
        return BridgePrefixFill(model)

    return TransformerLensKeyValueCache.init_cache(model.cfg, model.cfg.device, batch_size=batch_size)


def supports_prefix_cache(model: Model) -> bool:
    """Whether ``model`` runs queries on a :class:`PrefixCache` (a TransformerLens ``HookedTransformer``
    with absolute or rotary positions)."""
    cfg = getattr(model, "cfg", None)
    return (
        hasattr(model, "blocks")
        and hasattr(model, "get_pos_offset")
        and getattr(cfg, "positional_embedding_type", None) in ("standard", "rotary")
    )


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
