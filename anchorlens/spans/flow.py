"""Span-to-span information flow: the paper's attention x gradient saliency between any named spans.

For layer l, ``I_l(i, j) = | sum_h A_{h,l}(i, j) * dL/dA_{h,l}(i, j) |`` (``heads="sum"``, the paper; or
``sum_h |A * dL/dA|`` with ``heads="abs"``), with ``L`` the span prompt's loss (the target's negative
log-likelihood, a logit difference against a contrast, or the cross-entropy over choices; see
:mod:`anchorlens.spans.prompts`). Pairs are causal and off the diagonal (``j < i``), as in
:mod:`anchorlens.experiments.saliency.compute`. Per prompt and layer, from row span ``s`` (queries ``i``) to column span ``t``
(keys ``j``):

- ``total[l, s, t] = sum over pairs (i in s, j in t, j < i) of I_l(i, j)``;
- ``pairs[s, t]``: how many such pairs there are;
- ``mean = total / pairs`` (0 where there is no pair).

:meth:`SpanFlowResult.pooled` gives the mean over a union of span pairs (sum of totals over sum of pair
counts): the paper's ``S_wp`` is ``pooled(label spans, all spans)``, ``S_pq`` is ``pooled(["target"],
label spans)`` (single-token label words). Batches are right-padded; each row's loss is summed into the
batch loss, so every row's flow equals its unbatched flow.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import capture_hooks
from anchorlens.core.lean import LayerFiles, LayerGrads, choose_memory, lean_gradients
from anchorlens.core.runner import BatchHooks, HookSpec, LoopOptions, forward_batches
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.saliency.gradients import pattern_gradients
from anchorlens.spans.prompts import SpanPrompt
from anchorlens.types import Model

Grads = Float[Tensor, "layer batch head query key"]
SpanTotals = Float[Tensor, "n layer span span"]


def check_same_spans(prompts: Sequence[SpanPrompt]) -> tuple[str, ...]:
    """The span names every prompt shares.

    Raises:
        AnchorlensError: no prompts, or prompts with different span names.
    """
    if len(prompts) == 0:
        raise AnchorlensError("No span prompts.")
    names = {p.span_names for p in prompts}
    if len(names) > 1:
        raise AnchorlensError(f"All span prompts need the same span names, in order; got {sorted(names)}.")
    return prompts[0].span_names


def row_losses(
    model: Model, prompts: Sequence[SpanPrompt], batch: PromptBatch, logits: Tensor, resid: Tensor | None
) -> Float[Tensor, " batch"]:
    """Each row's loss: ``logits`` are ``[batch, d_vocab]`` at the last target row; ``resid`` the final
    residual stream (needed for multi-token ``nll`` targets, unembedded at their rows)."""
    out = []
    for r, p in enumerate(prompts):
        lg = logits[r].float()
        if p.loss == "contrast" and p.contrast is not None:
            out.append(lg[p.contrast] - lg[p.target[0]])
        elif p.loss == "choices":
            ids = list(p.choices)
            out.append(-F.log_softmax(lg[ids], -1)[ids.index(p.target[0])])
        elif len(p.target) == 1:
            out.append(-F.log_softmax(lg, -1)[p.target[0]])
        else:
            if resid is None or not hasattr(model, "ln_final"):
                raise AnchorlensError("Multi-token targets need a HookedTransformer (ln_final, unembed).")
            rows = torch.tensor(p.target_rows, device=resid.device) + batch.offset[r]
            full = model.unembed(model.ln_final(resid[r : r + 1, rows]))[0].float()
            ids_t = torch.tensor(p.target, device=full.device)
            out.append(F.cross_entropy(full, ids_t, reduction="sum"))
    return torch.stack(out)


def span_forward(
    model: Model,
    prompts: Sequence[SpanPrompt],
    *,
    fwd_hooks: HookSpec = None,
    own_hooks: BatchHooks | None = None,
    batch_size: int = 4,
    progress: bool | str = False,
    desc: str = "spans",
) -> Iterator[tuple[list[int], PromptBatch, Float[Tensor, " batch"]]]:
    """``(indices, batch, per-row loss)`` for right-padded batches of span prompts, through
    :func:`anchorlens.core.runner.forward_batches` (batches hold :meth:`SpanPrompt.as_icl` views: a batch hook
    sees ``batch.target`` = the last target row, ``batch.indices`` = indices into ``prompts``).
    Grad mode is the caller's."""
    n_layers = model.cfg.n_layers
    last = f"blocks.{n_layers - 1}.hook_resid_post"
    multi = any(p.loss == "nll" and len(p.target) > 1 for p in prompts)
    store: dict[str, dict[int, Tensor]] = {}

    def own(batch: PromptBatch) -> list[Any]:
        store.clear()
        hooks = list(own_hooks(batch)) if own_hooks else []
        return hooks + (capture_hooks({last: n_layers - 1}, lambda x, _: x, store) if multi else [])

    views = [p.as_icl() for p in prompts]
    options = LoopOptions(batch_size, "right", progress, desc)
    # span prompts have no demonstrations to share: full prompts
    loop: dict[str, Any] = dict(fwd_hooks=fwd_hooks, own_hooks=own, options=options, prefix="never")
    for index, batch, logits in forward_batches(model, views, **loop):
        resid = store.get("hook_resid_post", {}).get(n_layers - 1)
        yield index, batch, row_losses(model, [prompts[i] for i in index], batch, logits, resid)


def span_saliency_batches(
    model: Model,
    prompts: Sequence[SpanPrompt],
    *,
    per_head: bool = False,
    fwd_hooks: HookSpec = None,
    batch_size: int = 4,
    progress: bool | str = False,
) -> Iterator[tuple[list[int], PromptBatch, Grads]]:
    """``(indices, batch, A * dL/dA)`` per batch, ``[layer, batch, head, query, key]`` (``head`` is 1 unless
    ``per_head``): multipliers at ``hook_pattern`` after the caller's hooks, ``torch.autograd.grad`` of the
    summed row losses, parameters frozen and grad on only inside each step (never across the yield).

    Raises:
        AnchorlensError: under ``torch.inference_mode()``; a layer whose pattern did not run or is detached.
    """
    if torch.is_inference_mode_enabled():
        raise AnchorlensError("Span flows need gradients, which torch.inference_mode() forbids.")

    def run(own: BatchHooks) -> Iterator[tuple[list[int], PromptBatch, Tensor]]:
        return span_forward(
            model, prompts, fwd_hooks=fwd_hooks, own_hooks=own, batch_size=batch_size, progress=progress
        )

    yield from pattern_gradients(model, run, lambda batch, losses: losses.sum(), per_head=per_head)


def span_id_matrix(batch: PromptBatch, prompts: Sequence[SpanPrompt], width: int) -> Int[Tensor, "batch pos"]:
    """``[batch, pos]``: each padded position's span index (``-1`` on padding)."""
    ids = torch.full((len(prompts), width), -1, dtype=torch.long)
    for r, p in enumerate(prompts):
        off = int(batch.offset[r])
        ids[r, off : off + len(p.run_tokens)] = torch.tensor(p.span_ids())
    return ids


def aggregate(
    sal: Float[Tensor, "layer batch query key"], ids: Int[Tensor, "batch pos"], n_spans: int
) -> tuple[Float[Tensor, "batch layer span span"], Float[Tensor, "batch span span"]]:
    """Per row: span-to-span sums of ``sal`` over causal off-diagonal pairs of real tokens, and pair counts."""
    width = sal.shape[-1]
    ar = torch.arange(width)
    onehot = F.one_hot(ids.clamp_min(0), n_spans).float() * (ids >= 0)[..., None].float()  # [b, pos, S]
    causal = (ar[:, None] > ar[None, :]).float()
    masked = sal.float().cpu() * causal
    total = torch.einsum("lbij,bis,bjt->blst", masked, onehot, onehot)
    pairs = torch.einsum("ij,bis,bjt->bst", causal, onehot, onehot)
    return total, pairs


def lean_span_gradients(
    model: Model,
    prompts: Sequence[SpanPrompt],
    *,
    per_head: bool = False,
    fwd_hooks: HookSpec = None,
    batch_size: int = 4,
    progress: bool | str = False,
) -> Iterator[LayerGrads]:
    """:func:`span_saliency_batches` one layer at a time (:func:`anchorlens.core.lean.lean_gradients`):
    per right-padded batch, each layer's ``A * dL/dA`` ``[batch, head, query, key]``, the last layer first."""
    if torch.is_inference_mode_enabled():
        raise AnchorlensError("Span flows need gradients, which torch.inference_mode() forbids.")

    def losses(batch: PromptBatch, logits: Tensor, resid: Tensor) -> Tensor:
        return row_losses(model, [prompts[i] for i in batch.indices], batch, logits, resid)

    views = [p.as_icl() for p in prompts]
    options = LoopOptions(batch_size, "right", progress, "spans")
    yield from lean_gradients(model, views, losses, per_head=per_head, fwd_hooks=fwd_hooks, options=options)


def span_onehot(ids: Int[Tensor, "batch pos"], n_spans: int) -> Float[Tensor, "batch pos span"]:
    """``[batch, pos, span]``: one-hot span membership of each position (zero rows on padding)."""
    return F.one_hot(ids.clamp_min(0), n_spans).float() * (ids >= 0)[..., None].float()


def layer_totals(
    sal: Float[Tensor, "batch query key"], onehot: Float[Tensor, "batch pos span"]
) -> Float[Tensor, "batch span span"]:
    """One layer's span-to-span sums of ``sal`` over causal off-diagonal pairs (``sal`` is overwritten)."""
    masked = sal.float().cpu().tril_(-1)  # j < i
    return torch.einsum("bij,bis,bjt->bst", masked, onehot, onehot)


def pair_counts(onehot: Float[Tensor, "batch pos span"]) -> Float[Tensor, "batch span span"]:
    """Per row, the number of causal off-diagonal pairs ``(i in s, j in t, j < i)``: linear in the
    positions (counts of earlier positions per span, in float64 so long prompts count exactly)."""
    h = onehot.double()
    earlier = h.cumsum(1) - h  # [b, i, t]: positions j < i in span t
    return torch.einsum("bis,bit->bst", h, earlier).float()


@dataclass(frozen=True)
class SpanFlowResult:
    """Span-to-span flows of ``n`` prompts (row span -> column span: queries -> keys).

    Attributes:
        names: Span names (the user's, then ``"rest"`` and ``"target"``).
        total: ``[n, layer, span, span]`` summed saliency over the causal pairs of each span pair.
        pairs: ``[n, span, span]`` number of those pairs.
        heads: ``"sum"`` (``|sum_h A*dL/dA|``, the paper), ``"abs"`` (``sum_h |A*dL/dA|``) or ``"each"``
            (``"abs"`` with each head's share kept in ``head_total``).
        matrices: Only with ``keep=True``: per prompt the token-level ``[layer, query, key]`` saliency.
        head_total: Only with ``heads="each"``: ``[n, layer, head, span, span]`` per-head sums of
            ``|A_h * dL/dA_h|``; summed over heads they are ``total``.
    """

    names: tuple[str, ...]
    total: SpanTotals
    pairs: Float[Tensor, "n span span"]
    heads: str = "sum"
    matrices: tuple[Tensor, ...] | None = None
    head_total: Float[Tensor, "n layer head span span"] | None = None

    def head_flow(self) -> Float[Tensor, "layer head span span"]:
        """``[layer, head, span, span]`` mean saliency per pair, averaged over prompts (``heads="each"``)."""
        if self.head_total is None:
            raise AnchorlensError("Per-head flows need span_flow(..., heads='each').")
        return (self.head_total / self.pairs.clamp_min(1)[:, None, None]).mean(0)

    @property
    def n_layers(self) -> int:
        return int(self.total.shape[1])

    @property
    def mean(self) -> SpanTotals:
        """``[n, layer, span, span]``: mean saliency per pair (0 for span pairs without causal pairs)."""
        return self.total / self.pairs.clamp_min(1)[:, None]

    def index(self, names: Sequence[str]) -> list[int]:
        """Indices of span ``names``."""
        unknown = [n for n in names if n not in self.names]
        if unknown:
            raise AnchorlensError(f"No spans {unknown}; the spans are {list(self.names)}.")
        return [self.names.index(n) for n in names]

    def pooled(self, rows: Sequence[str], cols: Sequence[str] | None = None) -> Float[Tensor, "n layer"]:
        """``[n, layer]`` mean saliency over all causal pairs from ``rows`` spans to ``cols`` spans
        (default: every span): their summed totals over their summed pair counts."""
        r, c = self.index(rows), self.index(cols if cols is not None else self.names)
        tot = self.total[:, :, r][:, :, :, c].sum((2, 3))
        return tot / self.pairs[:, r][:, :, c].sum((1, 2)).clamp_min(1)[:, None]

    def flow(self, aggregation: str = "mean") -> Float[Tensor, "layer span span"]:
        """``[layer, span, span]`` averaged over prompts: ``"mean"`` (per pair) or ``"sum"`` (totals)."""
        if aggregation not in ("mean", "sum"):
            raise AnchorlensError(f"aggregation must be 'mean' or 'sum', got {aggregation!r}.")
        return (self.mean if aggregation == "mean" else self.total).mean(0)

    def to_json(self) -> dict[str, Any]:
        return {
            "spans": list(self.names),
            "n_layers": self.n_layers,
            "heads": self.heads,
            "aggregation": "mean",
            "flow": self.flow("mean").tolist(),
            "flow_sum": self.flow("sum").tolist(),
            "per_prompt": {"total": self.total.tolist(), "pairs": self.pairs.tolist()},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SpanFlowResult:
        """The result :meth:`to_json` wrote (without token-level matrices)."""
        per = d["per_prompt"]
        return cls(tuple(d["spans"]), torch.tensor(per["total"]), torch.tensor(per["pairs"]), d["heads"])


def _lean_span_flow(
    model: Model,
    prompts: Sequence[SpanPrompt],
    names: tuple[str, ...],
    *,
    heads: str,
    keep: bool,
    keep_dir: str | PathLike[str] | None,
    fwd_hooks: HookSpec,
    batch_size: int,
    progress: bool | str,
) -> SpanFlowResult:
    """:func:`span_flow` one layer at a time: each layer's saliency reduced to span totals at once; kept
    token-level matrices go to disk layer by layer (:class:`anchorlens.core.lean.LayerFiles`)."""
    n, n_layers, s = len(prompts), model.cfg.n_layers, len(names)
    total, pairs = torch.zeros(n, n_layers, s, s), torch.zeros(n, s, s)
    head_total = torch.zeros(n, n_layers, model.cfg.n_heads, s, s) if heads == "each" else None
    files = LayerFiles(keep_dir, n_layers, "flow") if keep else None
    onehot, seen = torch.zeros(0), None
    for step in lean_span_gradients(
        model, prompts, per_head=heads != "sum", fwd_hooks=fwd_hooks, batch_size=batch_size, progress=progress
    ):
        g = step.grads.float()
        sal = g.sum(1).abs() if heads == "sum" else g.abs().sum(1)  # [batch, q, k]
        if step.batch is not seen:  # once per batch
            rows = [prompts[i] for i in step.index]
            seen, onehot = step.batch, span_onehot(span_id_matrix(step.batch, rows, sal.shape[-1]), s)
            pairs[step.index] = pair_counts(onehot)
        if head_total is not None:
            for h in range(g.shape[1]):
                head_total[step.index, step.layer, h] = layer_totals(g[:, h].abs(), onehot)
        if files is not None:
            for r, i in enumerate(step.index):
                m = len(prompts[i].run_tokens)
                files.write(i, step.layer, sal[r, :m, :m])
        total[step.index, step.layer] = layer_totals(sal, onehot)
    kept = files.tensors(n) if files is not None else None
    return SpanFlowResult(names, total, pairs, heads, kept, head_total)


def span_flow(
    model: Model,
    prompts: Sequence[SpanPrompt],
    *,
    heads: str = "sum",
    keep: bool = False,
    fwd_hooks: HookSpec = None,
    batch_size: int = 4,
    progress: bool | str = False,
    memory: str = "auto",
    keep_dir: str | PathLike[str] | None = None,
) -> SpanFlowResult:
    """Span-to-span flows of every prompt (see the module docstring for what each number means).

    Args:
        model: A ``HookedTransformer`` (anything with TL hook names, ``hooks()`` and ``cfg``).
        prompts: :class:`SpanPrompt` s with the same span names (:func:`span_prompt`, :func:`from_icl`).
        heads: ``"sum"`` (the paper), ``"abs"``, or ``"each"`` (``"abs"`` and each head's share:
            :attr:`SpanFlowResult.head_total`).
        keep: Also keep each prompt's token-level ``[layer, query, key]`` saliency (unpadded; on the lean
            path written to disk one layer at a time and mapped back from the files).
        fwd_hooks: The caller's hooks (a list, or a function of the batch), before the multipliers.
        batch_size: Prompts per forward+backward (right-padded; results equal the unbatched ones).
        memory: ``"exact"`` (every layer's attention at once), ``"lean"`` (the same numbers one layer at a
            time: :mod:`anchorlens.core.lean`) or ``"auto"`` (lean where exact would not fit in memory).
        keep_dir: Where the lean path writes ``keep`` matrices (``flow_{i}.npy``); default a temporary
            folder, freed with the tensors.

    Raises:
        AnchorlensError: prompts with different span names; bad ``heads`` or ``memory``; a prompt longer
            than the model's context; ``memory="exact"`` where it would not fit (before any forward pass);
            see :func:`span_saliency_batches`.
    """
    names = check_same_spans(prompts)
    if heads not in ("sum", "abs", "each"):
        raise AnchorlensError(f"heads must be 'sum', 'abs' or 'each', got {heads!r}.")
    lengths = [len(p.run_tokens) for p in prompts]
    per_head = heads != "sum"
    path = choose_memory(
        model, lengths, batch_size=batch_size, memory=memory, per_head=per_head, what="span prompt"
    )
    if path == "lean":
        return _lean_span_flow(
            model,
            prompts,
            names,
            heads=heads,
            keep=keep,
            keep_dir=keep_dir,
            fwd_hooks=fwd_hooks,
            batch_size=batch_size,
            progress=progress,
        )
    n, n_layers, s = len(prompts), model.cfg.n_layers, len(names)
    total, pairs = torch.zeros(n, n_layers, s, s), torch.zeros(n, s, s)
    head_total = torch.zeros(n, n_layers, model.cfg.n_heads, s, s) if heads == "each" else None
    kept: list[Tensor] = [torch.zeros(0)] * n
    for index, batch, grads in span_saliency_batches(
        model, prompts, per_head=per_head, fwd_hooks=fwd_hooks, batch_size=batch_size, progress=progress
    ):
        g = grads.float()
        sal = g.sum(2).abs() if heads == "sum" else g.abs().sum(2)  # [layer, batch, q, k]
        rows = [prompts[i] for i in index]
        ids = span_id_matrix(batch, rows, sal.shape[-1])
        t, c = aggregate(sal, ids, s)
        total[index], pairs[index] = t, c
        if head_total is not None:  # heads as extra "layers": [batch, layer * head, s, s]
            n_h = g.shape[2]
            by_head = g.abs().transpose(1, 2).reshape(n_layers * n_h, *g.shape[1:2], *g.shape[3:])
            head_total[index] = aggregate(by_head, ids, s)[0].view(len(index), n_layers, n_h, s, s)
        if keep:
            for r, i in enumerate(index):
                m = len(prompts[i].run_tokens)
                kept[i] = sal[:, r, :m, :m].cpu()
    return SpanFlowResult(names, total, pairs, heads, tuple(kept) if keep else None, head_total)
