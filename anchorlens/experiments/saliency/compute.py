"""Information flow by attention x gradient saliency (paper section 2.1, Figure 3).

For layer l, ``I_l = | sum_h A_{h,l} * dL/dA_{h,l} |`` with ``A`` the post-softmax attention and ``L`` the
cross-entropy of the label-restricted logits at the target against the gold label. ``I_l(i, j)`` says how
much the loss depends on the information flowing from token j to token i in layer l. Three means over
pair sets summarise it per layer (diagonal excluded, token 0 kept):

- ``S_wp``: text -> label words, pairs ``(p_k, j)`` with ``j < p_k``;
- ``S_pq``: label words -> target, pairs ``(q, p_k)``;
- ``S_ww``: every other causal pair ``(i, j)``, ``j < i <= q``.

The paper's claim: S_wp dominates shallow layers, S_pq deep layers. Its figures normalise the three
per-example-averaged curves to sum to 1 per layer (:meth:`SaliencyResult.normalized`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from anchorlens.core.batch import PromptBatch
from anchorlens.core.layers import layer_thirds
from anchorlens.core.lean import LayerFiles, choose_memory, lean_gradients
from anchorlens.core.prefix import check_policy
from anchorlens.core.prompts import IclPrompt
from anchorlens.core.runner import BatchHooks, HookSpec, LoopOptions, forward_batches
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.saliency.gradients import pattern_gradients
from anchorlens.types import Model, PaddingSide, PrefixPolicy

HeadReduction = Literal["sum", "abs"]
Keep = Literal["none", "layers", "heads"]
FlowMasks = Bool[Tensor, "batch query key"]
Saliency = Float[Tensor, "layer batch query key"]


@dataclass(frozen=True)
class SaliencyResult:
    """Per-example, per-layer information flows.

    Attributes:
        S_wp: ``[n, layer]`` mean saliency of text -> label-word pairs.
        S_pq: ``[n, layer]`` mean saliency of label-word -> target pairs.
        S_ww: ``[n, layer]`` mean saliency of all other causal pairs.
        heads: ``"sum"`` (paper: absolute value of the head sum) or ``"abs"`` (sum of per-head absolutes).
        matrices: Only when asked: per prompt, ``[layer, query, key]`` saliency (``keep="layers"``) or
            ``[layer, head, query, key]`` (``keep="heads"``, signed per-head ``A * dL/dA``), unpadded.
    """

    S_wp: Float[Tensor, "n layer"]
    S_pq: Float[Tensor, "n layer"]
    S_ww: Float[Tensor, "n layer"]
    heads: str = "sum"
    matrices: tuple[Tensor, ...] | None = None

    @property
    def n_layers(self) -> int:
        return int(self.S_wp.shape[1])

    def curves(self) -> dict[str, Float[Tensor, " layer"]]:
        """The three flows per layer, averaged over examples."""
        return {"S_wp": self.S_wp.mean(0), "S_pq": self.S_pq.mean(0), "S_ww": self.S_ww.mean(0)}

    def normalized(self) -> dict[str, Float[Tensor, " layer"]]:
        """The averaged curves scaled to sum to 1 per layer (the paper's "relative sizes")."""
        c = self.curves()
        total = c["S_wp"] + c["S_pq"] + c["S_ww"]
        return {f"{k}_norm": v / total.clamp_min(torch.finfo(v.dtype).tiny) for k, v in c.items()}

    def thirds(self) -> list[dict[str, Any]]:
        """The paper's claim per third of the network (shallow, middle, deep): mean normalised S_wp and
        S_pq there, and which dominates. The claim: S_wp in the shallow third, S_pq in the deep third."""
        return thirds({k: [float(x) for x in v] for k, v in self.normalized().items()})

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"n_layers": self.n_layers, "heads": self.heads}
        for k, v in {**self.curves(), **self.normalized()}.items():
            out[k] = [float(x) for x in v]
        out["thirds"] = self.thirds()  # the verdict is the claim's (experiments/saliency/claim.py)
        out["per_example"] = {k: getattr(self, k).tolist() for k in ("S_wp", "S_pq", "S_ww")}
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> SaliencyResult:
        """The result :meth:`to_json` wrote (its per-example flows; not the optional matrices)."""
        wp, pq, ww = (
            torch.tensor(d["per_example"][k], dtype=torch.float32) for k in ("S_wp", "S_pq", "S_ww")
        )
        return cls(S_wp=wp, S_pq=pq, S_ww=ww, heads=d["heads"])


def flow_masks(batch: PromptBatch, width: int) -> tuple[FlowMasks, FlowMasks, FlowMasks]:
    """Boolean ``[batch, query, key]`` masks of the pair sets C_wp, C_pq and C_ww (padded coordinates)."""
    ar = torch.arange(width, device=batch.tokens.device)
    real = batch.attention_mask.bool()
    q = batch.target
    causal = ar[None, :, None] > ar[None, None, :]
    valid = causal & real[:, :, None] & real[:, None, :] & (ar[None, :, None] <= q[:, None, None])
    rows = torch.arange(len(batch), device=ar.device)[:, None]
    is_label = torch.zeros_like(real)
    is_label[rows, batch.label_positions] = True
    wp = valid & is_label[:, :, None]
    pq = torch.zeros_like(valid)
    pq[rows, q[:, None], batch.label_positions] = True
    ww = valid & ~wp & ~pq
    return wp, pq, ww


def thirds(curves: dict[str, Sequence[float]]) -> list[dict[str, Any]]:
    """Per third of the layers (shallow, middle, deep): mean ``S_wp_norm`` and ``S_pq_norm`` and which
    dominates, from normalised per-layer curves (a :meth:`SaliencyResult.normalized` or its JSON). A third
    with no layers (a model with fewer than 3) has ``None`` values."""
    out: list[dict[str, Any]] = []
    for name, r in zip(("shallow", "middle", "deep"), layer_thirds(len(curves["S_wp_norm"])), strict=True):
        if not r:  # fewer than 3 layers: this third is empty
            out.append({"third": name, "layers": [], "S_wp_norm": None, "S_pq_norm": None, "dominant": None})
            continue
        a, b = r.start, r.stop
        wp, pq = float(np.mean(curves["S_wp_norm"][a:b])), float(np.mean(curves["S_pq_norm"][a:b]))
        dominant = "S_wp" if wp > pq else "S_pq"
        out.append(
            {"third": name, "layers": [a, b - 1], "S_wp_norm": wp, "S_pq_norm": pq, "dominant": dominant}
        )
    return out


def check_grad_batch(batch: PromptBatch) -> None:
    if torch.is_inference_mode_enabled():
        raise AnchorlensError(
            "Saliency needs gradients, which torch.inference_mode() forbids; call it outside that block "
            "(torch.no_grad() is fine: anchorlens enables grad locally)."
        )
    if any(p.label < 0 for p in batch.prompts):
        raise AnchorlensError("Saliency's loss needs the gold label of every query; some prompts have none.")


def row_losses(batch: PromptBatch, logits: Tensor) -> Float[Tensor, " batch"]:
    """Each row's cross-entropy of its label-restricted logits against its gold label."""
    labels = torch.tensor([p.label for p in batch.prompts], device=logits.device)
    ids = torch.tensor(batch.prompts[0].label_token_ids, device=logits.device)
    return F.cross_entropy(logits[:, ids].float(), labels, reduction="none")


def _label_loss(batch: PromptBatch, logits: Tensor) -> Tensor:
    """The summed cross-entropy of each row's label-restricted logits against its gold label."""
    return row_losses(batch, logits).sum()


def saliency_batches(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    per_head: bool = False,
    fwd_hooks: HookSpec = None,
    batch_size: int = 4,
    padding_side: PaddingSide = "right",
    progress: bool | str = False,
    batches: Sequence[tuple[list[int], PromptBatch]] | None = None,
    prefix: PrefixPolicy = "auto",
) -> Iterator[tuple[list[int], PromptBatch, Float[Tensor, "layer batch head query key"]]]:
    """``(indices, batch, A * dL/dA)`` for every padded batch, ``[layer, batch, head, query, key]`` (``head``
    is 1 unless ``per_head``).

    The loss is the sum over rows of each row's cross-entropy of the label-restricted logits against the
    gold label, so every row's gradient equals its batch-size-1 gradient. Gradients are taken with
    ``torch.autograd.grad`` on multipliers inserted at ``hook_pattern`` after the caller's hooks;
    parameters are frozen meanwhile and never get ``.grad``.

    With ``prefix="always"``, prompts sharing their demonstrations run them once per batch and the queries on
    their key/value cache; gradients flow back into the prefix through the cache, per row, and each batch
    comes back as its full, right-padded prompts (see :func:`anchorlens.experiments.saliency.gradients.cached_multiplier_gradients`); prompts with their
    own demonstrations (``resample=True``) run whole. ``"auto"`` runs full prompts here: reuse is exact, but
    every query needs its own backward through the prefix (the prefix's saliency is per query), so only the
    prefix's forward is saved, at most ~1.3x in theory, and the batched backward measured 0.78x of the full
    prompts' speed on 2 CPU cores (``benchmarks/prefix.py``, AG News, batch 4).

    Raises:
        AnchorlensError: under ``torch.inference_mode()``; a row without a gold label; a layer whose
            ``hook_pattern`` did not run or is not in the forward path (detached, observational).
    """
    options = LoopOptions(batch_size, padding_side, progress, "saliency", batches)
    # "always" only: exact, but measured slower than full prompts on CPU (see the docstring)
    policy: PrefixPolicy = "always" if check_policy(prefix) == "always" else "never"

    def run(own: BatchHooks) -> Iterator[tuple[list[int], PromptBatch, Tensor]]:
        return forward_batches(
            model, prompts, fwd_hooks=fwd_hooks, own_hooks=own, options=options, prefix=policy
        )

    yield from pattern_gradients(
        model, run, _label_loss, per_head=per_head, check=check_grad_batch, row_losses=row_losses
    )


def batch_saliency(
    model: Model, batch: PromptBatch, *, per_head: bool = False, fwd_hooks: HookSpec = None
) -> Float[Tensor, "layer batch head query key"]:
    """``A * dL/dA`` for every layer of one padded batch (see :func:`saliency_batches`)."""
    runs = [(list(batch.indices) or list(range(len(batch))), batch)]
    for _, _, grads in saliency_batches(
        model, batch.prompts, per_head=per_head, fwd_hooks=fwd_hooks, batches=runs
    ):
        return grads
    raise AssertionError("unreachable: one batch in, one out")


def saliency_steps(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    lean: bool,
    per_head: bool,
    fwd_hooks: HookSpec,
    options: LoopOptions,
) -> Iterator[tuple[list[int], PromptBatch, list[int], Float[Tensor, "layer batch head query key"]]]:
    """``(indices, batch, layers, A * dL/dA)`` of full prompts, by either path: the exact path
    (:func:`saliency_batches`) yields every layer of a batch at once, the lean path
    (:func:`anchorlens.core.lean.lean_gradients`) one layer at a time, the last first. ``A * dL/dA`` is
    ``[len(layers), batch, head, query, key]`` (``head`` is 1 unless ``per_head``). The one place that
    picks between the two paths' loops for :func:`saliency`, the token roles and the per-head flows."""
    if lean:
        for step in lean_gradients(
            model,
            prompts,
            lambda batch, logits, _: row_losses(batch, logits),
            per_head=per_head,
            fwd_hooks=fwd_hooks,
            options=options,
            check=check_grad_batch,
        ):
            yield step.index, step.batch, [step.layer], step.grads[None]
        return
    yield from (
        (index, batch, list(range(model.cfg.n_layers)), grads)
        for index, batch, grads in saliency_batches(
            model,
            prompts,
            per_head=per_head,
            fwd_hooks=fwd_hooks,
            batch_size=options.batch_size,
            padding_side=options.padding_side,
            progress=options.progress,
            prefix="never",
        )
    )


def _lean_saliency(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    heads: str,
    keep: str,
    keep_dir: str | PathLike[str] | None,
    fwd_hooks: HookSpec,
    options: LoopOptions,
) -> SaliencyResult:
    """:func:`saliency` one layer at a time (:func:`saliency_steps`' lean path): each layer's
    ``A * dL/dA`` reduced into the three flows at once; kept matrices go to disk layer by layer."""
    per_head = heads == "abs" or keep == "heads"
    n, n_layers = len(prompts), model.cfg.n_layers
    out = torch.zeros(3, n, n_layers)
    files = LayerFiles(keep_dir, n_layers, "saliency") if keep != "none" else None
    masks: tuple[Tensor, ...] = ()
    counts = torch.zeros(0)
    seen: PromptBatch | None = None
    steps = saliency_steps(model, prompts, lean=True, per_head=per_head, fwd_hooks=fwd_hooks, options=options)
    for index, batch, (layer,), grads in steps:
        g = grads[0].float()  # [batch, head, q, k]
        sal = g.sum(1).abs() if heads == "sum" else g.abs().sum(1)  # [batch, q, k]
        if batch is not seen:  # once per batch
            seen, masks = batch, flow_masks(batch, sal.shape[-1])
            counts = torch.stack([m.sum((1, 2)) for m in masks]).to(sal.dtype)
        for f, mask in enumerate(masks):
            out[f, index, layer] = ((sal * mask).sum((1, 2)) / counts[f]).cpu()
        if files is not None:
            for r, i in enumerate(index):
                real = batch.attention_mask[r].bool()
                full = g[r] if keep == "heads" else sal[r]
                files.write(i, layer, full[..., real, :][..., real])
    matrices = files.tensors(n) if files is not None else None
    return SaliencyResult(out[0], out[1], out[2], heads=heads, matrices=matrices)


def saliency_path(
    model: Model,
    prompts: Sequence[IclPrompt],
    heads: str,
    keep: str,
    prefix: PrefixPolicy,
    memory: str,
    batch_size: int,
) -> Literal["exact", "lean"]:
    """:func:`saliency`'s arguments checked, and the path it runs (before any forward pass): the exact
    path under ``prefix="always"`` (its prefix cache), else :func:`anchorlens.core.lean.choose_memory`'s."""
    if len(prompts) == 0:
        raise AnchorlensError("No prompts to measure.")
    if heads not in ("sum", "abs") or keep not in ("none", "layers", "heads"):
        raise AnchorlensError(
            f"heads must be 'sum' or 'abs' and keep 'none', 'layers' or 'heads'; got {heads!r}, {keep!r}."
        )
    always = check_policy(prefix) == "always"
    if always and memory == "lean":
        raise AnchorlensError(
            "prefix='always' runs the prefix-cache path, which keeps every layer (memory='exact'); "
            "memory='lean' runs full prompts: pass prefix='auto' or 'never' with it."
        )
    per_head = heads == "abs" or keep == "heads"
    lengths = [len(p) for p in prompts]
    path = choose_memory(model, lengths, batch_size=batch_size, memory=memory, per_head=per_head)
    return "exact" if always else path


def saliency(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    batch_size: int = 4,
    heads: HeadReduction | str = "sum",
    keep: Keep | str = "none",
    fwd_hooks: HookSpec = None,
    padding_side: PaddingSide = "right",
    progress: bool | str = False,
    prefix: PrefixPolicy = "auto",
    memory: str = "auto",
    keep_dir: str | PathLike[str] | None = None,
) -> SaliencyResult:
    """Measure the paper's three information flows on every prompt.

    Args:
        model: A ``HookedTransformer`` (or anything with ``hooks()``, ``cfg`` and TL hook names).
        prompts: Labelled prompts from :func:`anchorlens.build_prompts`.
        batch_size: Prompts per forward+backward (grouped by length to limit padding).
        heads: ``"sum"``: ``|sum_h A*dL/dA|`` (the paper); ``"abs"``: ``sum_h |A*dL/dA|`` (its footnote).
        keep: Also return full saliency matrices: ``"layers"`` ``[layer, q, k]`` per prompt, or
            ``"heads"`` ``[layer, head, q, k]`` (signed). Memory grows with T^2: for a few prompts (on the
            lean path they are written to disk one layer at a time and come back mapped from the files).
        fwd_hooks: The caller's hooks (a list, or a function of the batch; see :mod:`anchorlens.core.runner`),
            active in every pass and applied before the gradient multipliers, so the flows are those of the
            modified model (e.g. under an isolation).
        padding_side: ``"right"`` (default) or ``"left"``.
        progress: Show a progress bar (a string is used as its description).
        prefix: ``"always"``: run shared demonstrations once per batch (see :func:`saliency_batches`; the
            exact path); ``"auto"`` and ``"never"`` run full prompts (reuse is exact here, but not faster on
            CPU).
        memory: ``"exact"``: every layer's attention and gradient at once (one backward); ``"lean"``: the
            same numbers one layer at a time (:mod:`anchorlens.core.lean`: about 2 forwards + 1 backward,
            memory linear in T but for one layer's attention; full prompts); ``"auto"`` (default): lean
            where the exact path's estimated memory would not fit in the available memory.
        keep_dir: Where the lean path writes kept matrices (``saliency_{i}.npy``, ``[layer, ...]``);
            default a temporary folder, freed with the tensors. Ignored on the exact path.

    Raises:
        AnchorlensError: bad ``heads``, ``keep`` or ``memory``; a prompt longer than the model's context;
            ``memory="exact"`` where it would not fit (before any forward pass); ``memory="lean"`` with
            ``prefix="always"``; see :func:`saliency_batches`.
    """
    per_head = heads == "abs" or keep == "heads"
    if saliency_path(model, prompts, heads, keep, prefix, memory, batch_size) == "lean":
        options = LoopOptions(batch_size, padding_side, progress, "saliency")
        return _lean_saliency(
            model, prompts, heads=heads, keep=keep, keep_dir=keep_dir, fwd_hooks=fwd_hooks, options=options
        )
    n = len(prompts)
    out = torch.zeros(3, n, model.cfg.n_layers)
    kept: list[Tensor | None] = [None] * n
    for index, batch, grads in saliency_batches(
        model,
        prompts,
        per_head=per_head,
        fwd_hooks=fwd_hooks,
        batch_size=batch_size,
        padding_side=padding_side,
        progress=progress,
        prefix=prefix,
    ):
        g = grads.float()
        sal = g.sum(2).abs() if heads == "sum" else g.abs().sum(2)  # [layer, batch, q, k]
        for f, mask in enumerate(flow_masks(batch, sal.shape[-1])):
            m = mask.to(sal.dtype)
            out[f, index] = (torch.einsum("lbij,bij->bl", sal, m) / m.sum((1, 2))[:, None]).cpu()
        if keep != "none":
            for r, i in enumerate(index):
                real = batch.attention_mask[r].bool()
                full = g[:, r] if keep == "heads" else sal[:, r]
                kept[i] = full[..., real, :][..., real].cpu()
    matrices = tuple(m for m in kept if m is not None) if keep != "none" else None
    return SaliencyResult(out[0], out[1], out[2], heads=heads, matrices=matrices)
