"""``A * dL/dA`` of every layer at once (the exact saliency path): multipliers of ones at every
``hook_pattern`` (:func:`anchorlens.core.hooks.gradient_multiplier_hooks`), one backward, and the
prefix-cache variant that takes each query row's own gradient. Used by :mod:`anchorlens.experiments.saliency.compute`
and by span flows; the lean path (one layer at a time) is :mod:`anchorlens.core.lean`."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.core.batch import PromptBatch, collate, pad_token_id
from anchorlens.core.hooks import gradient_multiplier_hooks
from anchorlens.core.models import frozen
from anchorlens.core.prefix import prefix_safe
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model


def pattern_gradients(
    model: Model,
    run: Callable[[Callable[[PromptBatch], list[Any]]], Iterator[tuple[list[int], PromptBatch, Tensor]]],
    loss: Callable[[PromptBatch, Tensor], Tensor],
    *,
    per_head: bool = False,
    check: Callable[[PromptBatch], None] | None = None,
    row_losses: Callable[[PromptBatch, Tensor], Tensor] | None = None,
) -> Iterator[tuple[list[int], PromptBatch, Float[Tensor, "layer batch head query key"]]]:
    """``(indices, batch, A * dL/dA)`` of every pass that ``run(own_hooks)`` makes, ``L = loss(batch, out)``:
    multipliers at every ``hook_pattern`` (after the caller's hooks), ``torch.autograd.grad``, parameters
    frozen and grad on for each forward and backward only, never across the yield. ``check`` sees each batch
    before its forward. Shared by :func:`saliency_batches` and span flows.

    When ``run`` reuses a prefix (a ``"prefix"`` pass, then ``"query"`` batches on its cache), the prefix's
    multipliers are shared by the batch's rows, so their gradients are taken per row (``row_losses``, one
    batched backward) and the batch is yielded as its full, right-padded prompts with the gradients in their
    coordinates (:func:`cached_multiplier_gradients`), so the multipliers are prefix-safe only with
    ``row_losses``."""
    n_layers = model.cfg.n_layers
    store: dict[int, Tensor] = {}
    prefix: dict[int, Tensor] = {}

    def own(batch: PromptBatch) -> list[Any]:
        if check is not None:
            check(batch)
        target = prefix if batch.kind == "prefix" else store
        target.clear()
        return gradient_multiplier_hooks(range(n_layers), target, per_head)

    runs = run(prefix_safe(own) if row_losses is not None else own)
    while True:
        with torch.enable_grad(), frozen(model):
            item = next(runs, None)
            if item is None:
                return
            index, batch, out = item
            if batch.kind == "query" and prefix:
                if row_losses is None:
                    raise AnchorlensError("Gradients on a prefix cache need per-row losses (row_losses=).")
                grads = cached_multiplier_gradients(row_losses(batch, out), prefix, store, n_layers)
                batch = collate(
                    batch.prompts, pad_token_id(model), "right", batch.tokens.device, batch.indices
                )
            else:
                grads = multiplier_gradients(loss(batch, out), store, n_layers)
        yield index, batch, grads


def _check_multipliers(store: dict[int, Tensor], n_layers: int) -> list[Tensor]:
    missing = [layer for layer in range(n_layers) if layer not in store]
    if missing:
        raise AnchorlensError(
            f"blocks.{missing[0]}.attn.hook_pattern never ran, so its saliency cannot be measured "
            "(does this model call hook_pattern in its attention?)."
        )
    return [store[layer] for layer in range(n_layers)]


def _check_used(grads: Sequence[Tensor | None]) -> list[Tensor]:
    dead = [layer for layer, g in enumerate(grads) if g is None]
    if dead:
        raise AnchorlensError(
            f"blocks.{dead[0]}.attn.hook_pattern is not in the forward path (a hook detached it, or the "
            "model only observes it), so A * dL/dA is undefined there. Remove hooks that detach the "
            "pattern, or use a model whose hook_pattern feeds the attention output."
        )
    return [g for g in grads if g is not None]


def multiplier_gradients(
    loss: Tensor, store: dict[int, Tensor], n_layers: int
) -> Float[Tensor, "layer batch head query key"]:
    """The gradient of ``loss`` w.r.t. every layer's multipliers in ``store`` (from
    :func:`anchorlens.core.hooks.gradient_multiplier_hooks`): ``A * dL/dA``, stacked over layers.

    Raises:
        AnchorlensError: a layer's ``hook_pattern`` never ran or is not in the forward path.
    """
    inputs = _check_multipliers(store, n_layers)
    grads = torch.autograd.grad(loss, inputs, allow_unused=True)
    return torch.stack(_check_used(grads)).detach()


def cached_multiplier_gradients(
    losses: Float[Tensor, " batch"], prefix: dict[int, Tensor], store: dict[int, Tensor], n_layers: int
) -> Float[Tensor, "layer batch head query key"]:
    """``A * dL_r/dA`` of every row ``r`` of a query batch run on a prefix cache, in full-prompt coordinates
    (``[layer, batch, head, P + query, P + query]``, right-padded).

    The prefix ran once for the batch, so its multipliers (``prefix``, ``[1, head, P, P]``) are shared by the
    rows: one backward of the summed loss would add the rows' gradients up. Each row's own is one vector-Jacobian
    product of ``losses`` with a one-hot vector; all of them come from one batched backward
    (``is_grads_batched``). A query row depends on the prefix and itself only, so its own multipliers'
    (``store``, ``[batch, head, query, P + query]``) gradient is the diagonal of the batched one.
    """
    shared = _check_multipliers(prefix, n_layers)
    own = _check_multipliers(store, n_layers)
    b = int(losses.shape[0])
    one_hot = torch.eye(b, dtype=losses.dtype, device=losses.device)
    raw = torch.autograd.grad(losses, [*shared, *own], one_hot, is_grads_batched=True, allow_unused=True)
    # the prefix's attention in the last layers may not reach the query (its keys and values are computed
    # before it): a zero gradient, as on the full prompt
    grads = [
        torch.zeros(b, *m.shape, dtype=m.dtype, device=m.device) if g is None else g
        for g, m in zip(raw[:n_layers], shared, strict=True)
    ] + _check_used(raw[n_layers:])
    rows = torch.arange(b, device=losses.device)
    out = []
    for layer in range(n_layers):
        g_prefix = grads[layer][:, 0]  # [batch, head, P, P]
        g_query = grads[n_layers + layer][rows, rows]  # [batch, head, query, P + query]
        n_prefix, width = g_prefix.shape[-1], g_query.shape[-1]
        full = g_query.new_zeros(b, g_query.shape[1], width, width)
        full[:, :, :n_prefix, :n_prefix] = g_prefix
        full[:, :, n_prefix:, :] = g_query
        out.append(full)
    return torch.stack(out).detach()
