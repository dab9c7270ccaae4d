"""Batching prompts for a forward pass: padding, positions shifted to the padded coordinates, and the order
batches are taken in (as given, or longest first so little compute goes to padding)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from anchorlens.core.prompts import IclPrompt
from anchorlens.errors import AnchorlensError
from anchorlens.types import DemoPositions, Mask, Model, PaddingSide, Positions, Tokens

BatchKind = Literal["full", "prefix", "query"]


@dataclass(frozen=True)
class PromptBatch:
    """Padded prompts with their positions shifted to the padded coordinates: what one forward pass runs.

    Attributes:
        tokens: ``[batch, pos]`` token ids, padded with the tokenizer's pad id.
        attention_mask: ``[batch, pos]`` 1 on real tokens, 0 on padding.
        target: ``[batch]`` the row (query position) of each prompt's target in ``hook_pattern``.
        label_positions: ``[batch, demo]`` the column (key position) of each demonstration's first label
            sub-token in ``hook_pattern``.
        demo_labels: ``[batch, demo]`` class id of each demonstration.
        offset: ``[batch]`` token column of prompt position 0 (> 0 under left padding; negative for a
            ``"query"`` batch, whose tokens start at the query): prompt position ``p`` is column ``p + offset``.
        prompts: The unpadded prompts (positions there are unshifted: add ``offset``).
        indices: Where each row's prompt sits in the prompt set the experiment was given.
        kind: ``"full"`` (whole prompts), ``"prefix"`` (the shared demonstrations alone, run once to fill
            a key/value cache; ``target`` is then the last demonstration token) or ``"query"`` (query tokens on
            top of a cache; ``label_positions`` index the cached keys).
    """

    tokens: Tokens
    attention_mask: Mask
    target: Positions
    label_positions: DemoPositions
    demo_labels: DemoPositions
    offset: Positions
    prompts: tuple[IclPrompt, ...]
    indices: tuple[int, ...] = ()
    kind: BatchKind = "full"

    def __len__(self) -> int:
        return len(self.prompts)


def collate(
    prompts: Sequence[IclPrompt],
    pad_token_id: int,
    padding_side: str = "right",
    device: Any = None,
    indices: Sequence[int] | None = None,
) -> PromptBatch:
    """Pad prompts into one batch; positions are shifted so they index the padded tokens.

    Raises:
        AnchorlensError: rows have different numbers of demonstrations or different label words.
    """
    if not prompts:
        raise AnchorlensError("Cannot batch zero prompts.")
    if padding_side not in ("right", "left"):
        raise AnchorlensError(f"padding_side must be 'right' or 'left', got {padding_side!r}.")
    n_demo = {len(p.demo_labels) for p in prompts}
    if len(n_demo) > 1 or len({p.label_token_ids for p in prompts}) > 1:
        raise AnchorlensError(
            "All prompts in a batch need the same number of demonstrations and label words."
        )
    width = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    offset = torch.zeros(len(prompts), dtype=torch.long)
    for i, p in enumerate(prompts):
        off = width - len(p) if padding_side == "left" else 0
        tokens[i, off : off + len(p)] = torch.tensor(p.tokens)
        mask[i, off : off + len(p)] = 1
        offset[i] = off
    target = torch.tensor([p.target for p in prompts]) + offset
    label_pos = torch.tensor([p.label_positions for p in prompts], dtype=torch.long).reshape(len(prompts), -1)
    demo_labels = torch.tensor([p.demo_labels for p in prompts], dtype=torch.long).reshape(len(prompts), -1)
    return PromptBatch(
        tokens=tokens.to(device),
        attention_mask=mask.to(device),
        target=target.to(device),
        label_positions=(label_pos + offset[:, None]).to(device),
        demo_labels=demo_labels.to(device),
        offset=offset.to(device),
        prompts=tuple(prompts),
        indices=tuple(indices) if indices is not None else tuple(range(len(prompts))),
    )


def pad_token_id(model_or_tokenizer: Any) -> int:
    """The tokenizer's pad id, else its end-of-sequence id, else 0 (pads are masked out anyway)."""
    tokenizer = getattr(model_or_tokenizer, "tokenizer", None) or model_or_tokenizer
    for name in ("pad_token_id", "eos_token_id"):
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    return 0


def iter_batches(
    model: Model, prompts: Sequence[IclPrompt], batch_size: int = 8, padding_side: PaddingSide = "right"
) -> Iterator[PromptBatch]:
    """Batches of ``prompts`` in order, on the model's device, padded with the tokenizer's pad id."""
    for _, batch in ordered_batches(model, prompts, list(range(len(prompts))), batch_size, padding_side):
        yield batch


def sorted_batches(
    model: Model, prompts: Sequence[IclPrompt], batch_size: int = 8, padding_side: PaddingSide = "right"
) -> Iterator[tuple[list[int], PromptBatch]]:
    """``(indices, batch)`` pairs over prompts grouped by length (longest first), so little compute goes
    to padding; ``indices`` says which prompts each batch row holds."""
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    yield from ordered_batches(model, prompts, order, batch_size, padding_side)


def ordered_batches(
    model: Model,
    prompts: Sequence[IclPrompt],
    order: Sequence[int],
    batch_size: int = 8,
    padding_side: PaddingSide = "right",
) -> Iterator[tuple[list[int], PromptBatch]]:
    """``(indices, batch)`` pairs taking ``prompts`` in ``order``, ``batch_size`` at a time."""
    if batch_size < 1:
        raise AnchorlensError(f"batch_size must be >= 1, got {batch_size}.")
    pad = pad_token_id(model)
    device = getattr(getattr(model, "cfg", None), "device", None)
    for i in range(0, len(order), batch_size):
        index = list(order[i : i + batch_size])
        yield index, collate([prompts[j] for j in index], pad, padding_side, device, index)
