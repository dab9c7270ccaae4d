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


class _SaliencyTap(torch.autograd.Function):
    """Identity on the pattern; its backward stores ``A * dL/dA`` (summed over heads, or per head) and
    passes ``dL/dA`` on unchanged. Unlike a multiplier it adds no ``[batch, head, query, key]`` tensor
    to the forward pass, and the head sum is accumulated one head at a time."""

    @staticmethod
    def forward(ctx: Any, pattern: Tensor, key: tuple[dict[int, Tensor], int, bool]) -> Tensor:
        ctx.save_for_backward(pattern)
        ctx.key = key
        return pattern.view_as(pattern)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        (pattern,) = ctx.saved_tensors
        store, layer, per_head = ctx.key
        if per_head:
            store[layer] = (pattern * grad).detach()
        else:
            acc = pattern[:, 0] * grad[:, 0]
            for h in range(1, pattern.shape[1]):
                acc.addcmul_(pattern[:, h], grad[:, h])
            store[layer] = acc[:, None].detach()
        return grad, None


def saliency_tap_hooks(
    layers: Sequence[int],
    store: dict[int, torch.Tensor],
    per_head: bool = False,
    ran: set[int] | None = None,
) -> list[FwdHook]:
    """``A * dL/dA`` read in the backward pass (the lean path's, :mod:`anchorlens.core.lean`): the same
    numbers as :func:`gradient_multiplier_hooks`, in less memory. After a backward pass through layer
    ``l``'s pattern, ``store[layer]`` holds ``[batch, 1, query, key]`` (``per_head``: ``[batch, head,
    query, key]``). The pattern must require grad (the block's input does), and the backward pass must go
    through it (take the gradient with respect to the block's input). ``ran`` collects the layers whose
    hook ran in the forward pass."""

    def make(layer: int) -> HookFn:
        def hook(pattern: Pattern, hook: Any) -> Pattern:
            if ran is not None:
                ran.add(layer)
            return _SaliencyTap.apply(pattern, (store, layer, per_head))

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


def z_name(layer: int) -> str:
    """``blocks.{layer}.attn.hook_z``: each query head's output before ``W_O`` ``[batch, pos, head, d_head]``."""
    return f"blocks.{layer}.attn.hook_z"


def set_heads_hooks(
    heads: Sequence[tuple[int, int]], values: Float[Tensor, "layer head d_head"]
) -> list[FwdHook]:
    """Replace the output ``z`` of each ``(layer, head)`` at every position by ``values[layer, head]``
    (mean ablation when ``values`` are the heads' mean outputs)."""
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)

    def make(layer: int, hs: list[int]) -> HookFn:
        def hook(z: Tensor, hook: Any) -> Tensor:
            z = z.clone()
            z[:, :, hs] = values[layer, hs].to(z.dtype).to(z.device)
            return z

        return hook

    return [(z_name(layer), make(layer, hs)) for layer, hs in sorted(by_layer.items())]


def patch_head_rows_hook(
    layer: int,
    heads: Int[Tensor, " batch"],
    positions: Int[Tensor, " batch"],
    values: Float[Tensor, "head d_head"],
) -> FwdHook:
    """At ``hook_z`` of ``layer``, row ``r``'s head ``heads[r]`` at position ``positions[r]`` gets
    ``values[heads[r]]``: one head patched per row, so one batch scores every head of a layer (rows with
    ``heads[r] < 0`` are left alone)."""

    def hook(z: Tensor, hook: Any) -> Tensor:
        keep = heads >= 0
        rows = torch.arange(len(heads), device=z.device)[keep]
        hs, ps = heads[keep].to(z.device), positions[keep].to(z.device)
        z = z.clone()
        z[rows, ps, hs] = values[hs.cpu()].to(z.dtype).to(z.device)
        return z

    return (z_name(layer), hook)


def resid_name(layer: int, point: str = "hook_resid_post") -> str:
    """``blocks.{layer}.hook_resid_post`` (or another residual point): the residual stream ``[batch, pos,
    d_model]`` after block ``layer``."""
    return f"blocks.{layer}.{point}"


def patch_positions_hooks(
    layer: int,
    rows: Int[Tensor, " entry"],
    positions: Int[Tensor, " entry"],
    vectors: Float[Tensor, "entry d_model"],
    point: str = "hook_resid_post",
) -> list[FwdHook]:
    """Replace the residual stream of ``layer`` at each ``(rows[i], positions[i])`` (padded coordinates) by
    ``vectors[i]``; later layers recompute from it (activation patching of task vectors)."""

    def hook(resid: Tensor, hook: Any) -> Tensor:
        out = resid.clone()
        out[rows.to(out.device), positions.to(out.device)] = vectors.to(out.device, out.dtype)
        return out

    return [(resid_name(layer, point), hook)]
