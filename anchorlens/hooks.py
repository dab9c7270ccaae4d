"""Hook-point functions: plain ``(hook_name, fn)`` lists for ``model.hooks(fwd_hooks=...)`` or
``run_with_hooks``, so they stack with a user's own TransformerLens hooks.

They are written against the hook names alone (``blocks.{l}.attn.hook_pattern``, ``hook_attn_scores``),
so any model exposing those names with TransformerLens shapes works.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Bool
from torch import Tensor

from anchorlens._typing import Pattern

HookFn = Callable[..., Any]
FwdHook = tuple[str, HookFn]


def pattern_name(layer: int) -> str:
    """``blocks.{layer}.attn.hook_pattern``: post-softmax attention ``[batch, head, query_pos, key_pos]``."""
    return f"blocks.{layer}.attn.hook_pattern"


def scores_name(layer: int) -> str:
    """``blocks.{layer}.attn.hook_attn_scores``: pre-softmax scores, after the causal mask."""
    return f"blocks.{layer}.attn.hook_attn_scores"


def gradient_multiplier_hooks(
    layers: Sequence[int], store: dict[int, torch.Tensor], per_head: bool = False
) -> list[FwdHook]:
    """Multiply each layer's attention pattern by ones that require grad (the paper's saliency trick).

    After the forward pass ``store[layer]`` holds the multiplier; the gradient of a loss with respect to
    it is ``A * dL/dA``, summed over heads (shape ``[batch, 1, query, key]``) or per head
    (``per_head=True``: ``[batch, head, query, key]``). Read it with ``torch.autograd.grad``, so model
    parameters never receive ``.grad``. Needs grad mode on during the forward pass.
    """

    def make(layer: int) -> HookFn:
        def hook(pattern: Pattern, hook: Any) -> Pattern:
            b, h, q, k = pattern.shape
            shape = (b, h if per_head else 1, q, k)
            ones = torch.ones(shape, dtype=pattern.dtype, device=pattern.device, requires_grad=True)
            store[layer] = ones
            return pattern * ones

        return hook

    return [(pattern_name(layer), make(layer)) for layer in layers]


def cut_edges_hooks(
    layers: Sequence[int], cut: Bool[Tensor, "batch query key"], mode: str = "pre"
) -> list[FwdHook]:
    """Cut attention edges ``(query, key)`` where ``cut`` is True, in every head of ``layers``.

    ``mode="pre"`` (the paper's code): the scores at ``hook_attn_scores`` become ``-inf`` before the
    softmax, so each row renormalises over its remaining keys (an isolated label word attends only to
    itself). ``mode="post"``: the pattern at ``hook_pattern`` is zeroed after the softmax without
    renormalising (the paper's wording "A(p, i) = 0"). A row with every edge cut outputs zero either way.
    """
    if mode not in ("pre", "post"):
        raise ValueError(f"mode must be 'pre' or 'post', got {mode!r}")

    def hook(x: Pattern, hook: Any) -> Pattern:
        return x.masked_fill(cut[:, None], -torch.inf if mode == "pre" else 0.0)

    name = scores_name if mode == "pre" else pattern_name
    return [(name(layer), hook) for layer in layers]
