"""Every hook factory of anchorlens: plain ``(hook_name, fn)`` lists for ``model.hooks(fwd_hooks=...)`` or
``run_with_hooks``, so they stack with a user's own TransformerLens hooks.

They are written against TransformerLens hook names alone (``blocks.{l}.attn.hook_pattern``,
``hook_attn_scores``, ``hook_q/k``, ``hook_pos_embed``), so any model exposing those names with
TransformerLens shapes works.

Order at one hook point: TransformerLens runs forward hooks in the order they were added. anchorlens'
experiments add the caller's ``fwd_hooks`` first and their own hooks after them, so an anchorlens hook
(a gradient multiplier, a cut, a capture, ``exp(beta)``) sees the activation *as the caller's hooks left
it*: the experiment measures the model the caller modified. Hooks a caller attached before the call
(``with model.hooks(...)``, ``module.applied(model)``, an SAE) run before both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from anchorlens.types import FwdHook, HookFn, Pattern

Entries = Int[Tensor, " entry"]


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


def scale_entries(
    pattern: Pattern,
    entries: tuple[Entries, Entries, Entries],
    log_factor: Float[Tensor, "head entry"],
) -> Pattern:
    """A copy of ``pattern`` whose entries ``[row, :, query, key]`` are multiplied by ``exp(log_factor)``
    (per head and entry), without renormalising; gradients reach ``log_factor``."""
    dev = pattern.device
    r, q, k = (x.to(dev) for x in entries)
    factor = log_factor.to(dev).exp().to(pattern.dtype).T  # [entry, head]
    out = pattern.clone()
    out[r, :, q, k] = pattern[r, :, q, k] * factor
    return out


def scale_entries_hooks(
    layers: Sequence[int],
    entries: tuple[Entries, Entries, Entries],
    log_factor: Callable[[int], Float[Tensor, "head entry"]],
) -> list[FwdHook]:
    """Hooks applying :func:`scale_entries` at ``hook_pattern`` of ``layers`` with ``log_factor(layer)``
    (anchor re-weighting's ``exp(beta)`` on the target -> label-word entries)."""

    def make(layer: int) -> HookFn:
        def hook(pattern: Pattern, hook: Any) -> Pattern:
            return scale_entries(pattern, entries, log_factor(layer))

        return hook

    return [(pattern_name(layer), make(layer)) for layer in layers]


def capture_hooks(
    names: dict[str, int], reduce: Callable[[Tensor, int], Tensor], store: dict[str, dict[int, Tensor]]
) -> list[FwdHook]:
    """Observe activations without changing them: ``store[suffix][layer] = reduce(activation, layer)``
    for every hook name in ``names`` (``name -> layer``); ``suffix`` is the part after ``attn.``
    (``hook_pattern``, ``hook_rot_q``...). ``reduce`` should make the stored tensor small (one row, a few
    columns), detached. Keyed by the name asked for, not ``hook.name``: on TransformerBridge an alias
    (``hook_q``) fires on the hook point it stands for (``q.hook_out``)."""

    def make(name: str) -> HookFn:
        layer, suffix = names[name], name.rsplit(".", 1)[-1]

        def hook(x: Tensor, hook: Any) -> None:
            store.setdefault(suffix, {})[layer] = reduce(x, layer)

        return hook

    return [(name, make(name)) for name in names]


def restart_positions_hook(w_pos: Float[Tensor, "n_ctx d_model"], real: Bool[Tensor, "batch pos"]) -> FwdHook:
    """A ``hook_pos_embed`` hook giving the tokens positions 0, 1, ... (pads keep a zero embedding):
    the query restarting at position 0 on top of a key/value cache (the paper's GPT-2 compression code)."""

    def hook(pos_embed: Tensor, hook: Any) -> Tensor:
        return w_pos[: pos_embed.shape[1]][None] * real[..., None]

    return ("hook_pos_embed", hook)
