"""Is attention x gradient a faithful measure of information flow? (beyond the paper: issue 14)

Saliency (section 2.1) reads ``A * dL/dA``: the first-order estimate of how the loss changes when an
attention edge is removed. This module checks that estimate against the real effect, per layer ``l`` and
flow group ``g`` (the pair sets of ``S_wp``, ``S_pq`` and ``S_ww`` from :func:`anchorlens.experiments.saliency.compute.flow_masks`):

- **predicted** (first order): ``-sum over the group's edges of sum_h A * dL/dA``, the change in loss that
  the gradient predicts when the edges go from ``A`` to 0 (signed, summed over heads);
- **measured**: ``L(cut) - L``, the edges zeroed after the softmax in layer ``l`` only
  (:func:`anchorlens.core.hooks.cut_edges_hooks` with ``mode="post"``, no renormalisation);
- **integrated gradients**: the group's edges scaled by ``s`` from 1 (the model) to 0 (the cut), the
  gradient ``dL/ds`` (the sum of every edge's ``A * dL/dA'`` at that point) integrated with the trapezoid
  rule on ``steps`` intervals; the attributions summed over the group's edges. *Completeness*: the exact
  integral equals the measured change, so ``|IG - measured|`` is the discretisation error alone (it
  shrinks as ``1 / steps^2``).

``L`` is saliency's loss: the cross-entropy of the label-restricted logits at the target against the gold
label; every number is a mean over prompts. The summary is the Spearman correlation of predicted (or IG)
against measured over the ``(layer, group)`` points.

Cost: one forward and backward pass for the model plus ``steps`` per (layer, group) point, per batch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from anchorlens.core.batch import PromptBatch, sorted_batches
from anchorlens.core.hooks import FwdHook, cut_edges_hooks, gradient_multiplier_hooks, pattern_name
from anchorlens.core.lean import choose_memory, lean_gradients
from anchorlens.core.models import frozen
from anchorlens.core.prompts import IclPrompt
from anchorlens.core.runner import HookSpec, LoopOptions, forward_batches
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.saliency.compute import flow_masks
from anchorlens.types import Model, PaddingSide, Pattern, VocabLogits

GROUPS = ("S_wp", "S_pq", "S_ww")
Points = Float[Tensor, "layer group"]
EdgeMask = Bool[Tensor, "batch query key"]


@dataclass(frozen=True)
class FaithfulnessResult:
    """Predicted, integrated-gradient and measured loss changes of cutting each flow group in each layer.

    Attributes:
        layers: The layers measured (rows of the tables).
        predicted: ``[layer, group]`` first-order change in mean loss, ``-sum(A * dL/dA)`` over the edges.
        integrated: ``[layer, group]`` integrated-gradients change (trapezoid rule, ``steps`` intervals).
        measured: ``[layer, group]`` ``L(cut) - L``: the measured change in mean loss.
        loss: The unmodified model's mean loss.
        n: Number of prompts.
        steps: Trapezoid intervals of the integrated gradients.
    """

    layers: tuple[int, ...]
    predicted: Points
    integrated: Points
    measured: Points
    loss: float
    n: int
    steps: int

    def spearman(self, which: str = "predicted") -> float | None:
        """Spearman correlation over the (layer, group) points of ``which`` (``"predicted"`` or
        ``"integrated"``) against the measured change; None with < 3 points or a constant side."""
        from scipy.stats import spearmanr

        a = getattr(self, which).flatten().double().numpy()
        b = self.measured.flatten().double().numpy()
        if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
            return None
        rho = float(spearmanr(a, b)[0])
        return rho if math.isfinite(rho) else None

    @property
    def completeness_error(self) -> float:
        """``sum |IG - measured| / sum |measured|`` over the points: IG's relative discretisation error
        (0 = complete)."""
        total = float(self.measured.abs().sum())
        err = float((self.integrated - self.measured).abs().sum())
        return err / total if total > 0 else err

    def to_json(self) -> dict[str, Any]:
        """``first_order`` and ``integrated_gradients`` summaries, then every point's numbers."""
        return {
            "first_order": {"spearman": self.spearman("predicted"), "n_points": self.measured.numel()},
            "integrated_gradients": {
                "spearman": self.spearman("integrated"),
                "completeness_error": self.completeness_error,
                "completeness_error_max_abs": float((self.integrated - self.measured).abs().max()),
                "steps": self.steps,
            },
            "n_prompts": self.n,
            "loss": self.loss,
            "layers": list(self.layers),
            "groups": list(GROUPS),
            "predicted": self.predicted.tolist(),
            "integrated": self.integrated.tolist(),
            "measured": self.measured.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FaithfulnessResult:
        t = {k: torch.tensor(d[k], dtype=torch.float32) for k in ("predicted", "integrated", "measured")}
        steps = int(d["integrated_gradients"]["steps"])
        return cls(tuple(d["layers"]), **t, loss=float(d["loss"]), n=int(d["n_prompts"]), steps=steps)


def _row_losses(logits: VocabLogits, batch: PromptBatch) -> Float[Tensor, " batch"]:
    """Saliency's loss per row: cross-entropy of the label-word logits against the gold label."""
    labels = torch.tensor([p.label for p in batch.prompts], device=logits.device)
    ids = torch.tensor(batch.prompts[0].label_token_ids, device=logits.device)
    return F.cross_entropy(logits[:, ids].float(), labels, reduction="none")


def _run(
    model: Model, batch: PromptBatch, index: list[int], fwd_hooks: HookSpec, own: list[FwdHook]
) -> VocabLogits:
    """One forward pass of ``batch`` (whole prompts: the cuts and masks are in their coordinates): the
    caller's hooks first, then ``own``."""
    options = LoopOptions(batches=[(index, batch)])
    runs = forward_batches(
        model, batch.prompts, fwd_hooks=fwd_hooks, own_hooks=lambda b: own, options=options, prefix="never"
    )
    for _, _, logits in runs:
        return logits
    raise AssertionError("unreachable: one batch in, one out")


def first_order(
    model: Model,
    batch: PromptBatch,
    index: list[int],
    layers: Sequence[int],
    fwd_hooks: HookSpec = None,
    *,
    lean: bool = False,
) -> tuple[Float[Tensor, " batch"], Float[Tensor, "layer group batch"]]:
    """The unmodified loss per row and ``dL/ds`` at ``s = 1`` per (layer, group, row): the sum over the
    group's edges of ``sum_h A * dL/dA`` (the predicted change of a cut is its negative). ``lean``: one
    layer at a time (:func:`anchorlens.core.lean.lean_gradients`), the same numbers."""
    if lean:
        return _lean_first_order(model, batch, index, layers, fwd_hooks)
    store: dict[int, Tensor] = {}
    logits = _run(model, batch, index, fwd_hooks, gradient_multiplier_hooks(layers, store))
    loss = _row_losses(logits, batch)
    grads = torch.autograd.grad(loss.sum(), [store[layer] for layer in layers])
    masks = torch.stack(flow_masks(batch, batch.tokens.shape[1])).to(grads[0].dtype)  # [group, b, q, k]
    g = torch.stack([torch.einsum("bqk,gbqk->gb", x[:, 0].float(), masks.float()) for x in grads])
    return loss.detach(), g.detach()


def _lean_first_order(
    model: Model, batch: PromptBatch, index: list[int], layers: Sequence[int], fwd_hooks: HookSpec
) -> tuple[Float[Tensor, " batch"], Float[Tensor, "layer group batch"]]:
    """:func:`first_order` one layer at a time, each layer's ``A * dL/dA`` reduced over the groups at once."""
    masks = flow_masks(batch, batch.tokens.shape[1])
    per_layer: dict[int, Tensor] = {}
    loss = torch.zeros(len(batch))
    for step in lean_gradients(
        model,
        batch.prompts,
        lambda b, logits, _: _row_losses(logits, b),
        layers=layers,
        fwd_hooks=fwd_hooks,
        options=LoopOptions(batches=[(index, batch)]),
    ):
        g = step.grads[:, 0].float()  # [batch, q, k]
        per_layer[step.layer] = torch.stack([(g * m).sum((1, 2)) for m in masks])  # [group, batch]
        loss = step.losses
    return loss, torch.stack([per_layer[layer] for layer in layers])


def scaled_edges_hooks(layer: int, mask: EdgeMask, scale: Float[Tensor, " batch"]) -> list[FwdHook]:
    """Hooks at ``hook_pattern`` of ``layer`` giving ``A * (1 - mask) + scale * A * mask``: the masked
    edges cut post-softmax by :func:`cut_edges_hooks` then added back times ``scale`` (per row). At
    ``scale = 0`` the pattern is exactly the cut one; gradients reach ``scale``."""
    kept: dict[str, Pattern] = {}

    def keep(pattern: Pattern, hook: Any) -> None:
        kept["A"] = pattern

    def add_back(pattern: Pattern, hook: Any) -> Pattern:
        s = scale.to(pattern.dtype)[:, None, None, None]
        return pattern + s * kept["A"] * mask[:, None].to(pattern.dtype)

    name = pattern_name(layer)
    return [(name, keep), *cut_edges_hooks([layer], mask, mode="post"), (name, add_back)]


def scaled_loss(
    model: Model,
    batch: PromptBatch,
    index: list[int],
    layer: int,
    mask: EdgeMask,
    alpha: float,
    fwd_hooks: HookSpec = None,
) -> tuple[Float[Tensor, " batch"], Float[Tensor, " batch"]]:
    """Loss per row with the masked edges of ``layer`` scaled by ``alpha``, and ``dL/ds`` there."""
    s = torch.full((len(batch),), float(alpha), device=batch.tokens.device, requires_grad=True)
    logits = _run(model, batch, index, fwd_hooks, scaled_edges_hooks(layer, mask, s))
    loss = _row_losses(logits, batch)
    (grad,) = torch.autograd.grad(loss.sum(), [s])
    return loss.detach(), grad.detach()


def _batch_points(
    model: Model,
    batch: PromptBatch,
    index: list[int],
    layers: Sequence[int],
    steps: int,
    fwd_hooks: HookSpec,
    lean: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per (layer, group), summed over the batch's rows: predicted, integrated and measured changes; and
    the summed unmodified loss."""
    loss1, g1 = first_order(model, batch, index, layers, fwd_hooks, lean=lean)
    masks = flow_masks(batch, batch.tokens.shape[1])
    shape = (len(layers), len(GROUPS))
    integrated, measured = torch.zeros(shape), torch.zeros(shape)
    for li, layer in enumerate(layers):
        for j, mask in enumerate(masks):
            area = g1[li, j] / 2  # trapezoid: the s = 1 end, from the first-order pass
            for k in range(steps):
                loss, g = scaled_loss(model, batch, index, layer, mask, k / steps, fwd_hooks)
                area = area + (g / 2 if k == 0 else g)
                if k == 0:
                    measured[li, j] = float((loss - loss1).sum())
            integrated[li, j] = -float(area.sum()) / steps
    return -g1.sum(-1).cpu(), integrated, measured, loss1.sum().cpu()


def faithfulness(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    steps: int = 4,
    layers: Sequence[int] | None = None,
    fwd_hooks: HookSpec = None,
    batch_size: int = 4,
    padding_side: PaddingSide = "right",
    progress: bool = False,
    memory: str = "auto",
) -> FaithfulnessResult:
    """Predicted (first order), integrated-gradient and measured loss changes of cutting each flow group.

    Args:
        model: A ``HookedTransformer`` (TL hook names ``hook_pattern``).
        prompts: Labelled prompts (the saliency setup: ``build_prompts(..., resample=True)``).
        steps: Trapezoid intervals of the integrated gradients (>= 1); each costs one forward and backward
            pass per (layer, group) point; ``steps=1`` is the mean of the two ends.
        layers: Layers to measure (default: all).
        fwd_hooks: The caller's hooks (a list or a function of the batch), active in every pass, before
            the cuts and multipliers: the flows of the caller's modified model.
        batch_size: Prompts per pass.
        padding_side: ``"right"`` or ``"left"``.
        progress: Print one line per batch.
        memory: The first-order term's path: ``"exact"``, ``"lean"`` (one layer at a time,
            :mod:`anchorlens.core.lean`, the same numbers) or ``"auto"`` (lean where exact would not fit).
            The measured and integrated-gradient points run their own passes (a backward from the cut
            layer up), whatever this says.
    """
    if len(prompts) == 0:
        raise AnchorlensError("No prompts to measure.")
    if steps < 1:
        raise AnchorlensError(f"steps must be >= 1, got {steps}.")
    if torch.is_inference_mode_enabled():
        raise AnchorlensError("Faithfulness needs gradients; call it outside torch.inference_mode().")
    if any(p.label < 0 for p in prompts):
        raise AnchorlensError(
            "Faithfulness's loss needs the gold label of every query; some prompts have none."
        )
    layer_list = list(range(model.cfg.n_layers)) if layers is None else [int(x) for x in layers]
    lean = choose_memory(model, [len(p) for p in prompts], batch_size=batch_size, memory=memory) == "lean"
    totals = [torch.zeros(len(layer_list), len(GROUPS)) for _ in range(3)]
    loss = torch.zeros(())
    with torch.enable_grad(), frozen(model):
        for b, (index, batch) in enumerate(sorted_batches(model, prompts, batch_size, padding_side)):
            parts = _batch_points(model, batch, index, layer_list, steps, fwd_hooks, lean)
            for total, part in zip(totals, parts[:3], strict=True):
                total += part
            loss = loss + parts[3]
            if progress:
                print(f"faithfulness: batch {b + 1}, {len(index)} prompts done", flush=True)
    n = len(prompts)
    predicted, integrated, measured = (t / n for t in totals)
    return FaithfulnessResult(tuple(layer_list), predicted, integrated, measured, float(loss) / n, n, steps)


def faithfulness_figure(result: FaithfulnessResult) -> Any:
    """Two scatter panels on a ``matplotlib.figure.Figure``: first-order and IG change vs the measured
    change, one point per (layer, group), with the identity line."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4.5))
    measured = result.measured.numpy()
    for ax, which, title in zip(
        fig.subplots(1, 2),
        ("predicted", "integrated"),
        ("first order: -A*dL/dA", "integrated gradients"),
        strict=True,
    ):
        values = getattr(result, which).numpy()
        for j, (group, color) in enumerate(zip(GROUPS, ("tab:blue", "tab:orange", "tab:green"), strict=True)):
            ax.scatter(measured[:, j], values[:, j], s=18, color=color, label=group)
        lo = float(min(measured.min(), values.min()))
        hi = float(max(measured.max(), values.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        rho = result.spearman(which)
        ax.set_title(f"{title} (Spearman {'n/a' if rho is None else f'{rho:.2f}'})", fontsize=10)
        ax.set_xlabel("measured change in loss when the edges are cut")
        ax.set_ylabel("estimated change")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def faithfulness_command(
    model: Model,
    task: Any,
    n: int,
    out_dir: str | Path,
    *,
    steps: int = 4,
    seed: int = 42,
    layers: Sequence[int] | None = None,
    batch_size: int = 4,
    fwd_hooks: HookSpec = None,
    progress: bool = False,
) -> dict[str, Any]:
    """``anchorlens faithfulness``: ``n`` saliency prompts of ``task`` (demonstrations redrawn per query,
    seeded), :func:`faithfulness`, then ``faithfulness.json`` and ``faithfulness.png`` in ``out_dir``.
    Returns the JSON dict (``first_order`` and ``integrated_gradients`` summaries first)."""
    from anchorlens.core.prompts import build_prompts

    prompts = build_prompts(model, task, n=n, seed=seed, resample=True, on_overflow="drop")
    result = faithfulness(
        model,
        prompts,
        steps=steps,
        layers=layers,
        fwd_hooks=fwd_hooks,
        batch_size=batch_size,
        progress=progress,
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = {**result.to_json(), "task": task.name, "seed": seed}
    (out / "faithfulness.json").write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
    faithfulness_figure(result).savefig(out / "faithfulness.png", dpi=110)
    return data
