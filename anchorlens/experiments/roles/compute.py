"""Token roles: which kinds of ICL prompt tokens gather the demonstrations' information (beyond the paper).

Every prompt position gets one role of :data:`ROLES` (:func:`token_roles`), by this rule, first match wins:

1. ``label``: every position of a demonstration's label word (``IclPrompt.label_spans``, all sub-tokens);
2. ``target``: the last token (``IclPrompt.target``, the query's label-prefix colon);
3. ``forerunner``: the position just before each label word's first token (Cho et al. 2024's forerunner
   token, usually the colon of ``Sentiment:``), unless that position is itself a label word;
4. ``template``: the formatting tokens (``IclPrompt.format_positions``: the demonstrations' prefixes,
   separators and the BOS) and the query's template tokens (those between ``query_start`` and the target
   outside ``IclPrompt.query_text_span``; all of them when that span is unknown);
5. ``stopword``: a text token (a demonstration's ``text_spans`` or the query's text) that holds no letter
   or digit (punctuation, Bai et al. 2024's stop-word class), or whose stripped, lower-cased string is in
   :data:`STOP_WORDS` (NLTK's English list) and is a whole word (no letter or digit touches it in the
   prompt text, so ``there`` in ``thereafter`` is not one);
6. ``content``: every other text token.

**Flows between roles** (:func:`role_flows`): the paper's attention x gradient saliency ``I_l(i, j)`` (section
2.1, :mod:`anchorlens.experiments.saliency.compute`), averaged per prompt and layer over the causal pairs
``j < i <= target`` (diagonal and padding excluded) whose query token ``i`` has one role and key token ``j``
another: a ``[role_to, role_from]`` matrix, with its pair counts. The paper's three flows are merges of its
cells, pair-count weighted (:meth:`RoleFlowResult.paper_flows`): S_wp = (label <- any role), S_pq = (target
<- label), S_ww = every other cell. They equal :func:`anchorlens.saliency`'s when every label word is one
token (the paper's p_k is a label word's first sub-token, whereas the ``label`` role holds all of them).

**Isolation of a role** (:func:`role_isolation`): as :func:`anchorlens.isolation` isolates label words (the
paper's section 2.2), every position of the role is cut from the earlier tokens (``A(p, j) = 0`` for ``j <
p``: no information flows into p) in the first or last k layers; label and word loyalty against the
unmodified model. Roles hold very different numbers of positions (``RoleIsolationRun.positions``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.core.batch import PromptBatch
from anchorlens.core.layers import layer_thirds
from anchorlens.core.prompts import IclPrompt
from anchorlens.core.runner import HookSpec, LoopOptions
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.isolation.compute import resolve_layers
from anchorlens.experiments.roles.isolation import (
    RoleIsolationResult,
    RoleIsolationRun,
    isolate_role,
    role_isolation,
)
from anchorlens.experiments.roles.tagging import ROLES, TEXT_ROLES, check_roles, token_roles
from anchorlens.experiments.saliency.compute import saliency_path, saliency_steps
from anchorlens.types import Model, PaddingSide

__all__ = [
    "PAPER_GROUPS",
    "ROLES",
    "RoleFlowResult",
    "RoleIsolationResult",
    "RoleIsolationRun",
    "RolesResult",
    "isolate_role",
    "role_flows",
    "role_isolation",
    "roles",
    "token_roles",
]

Cell = tuple[str, str]
RoleMatrix = Float[Tensor, "n layer role_to role_from"]


def _role_ids(batch: PromptBatch, tags: Sequence[Sequence[str]]) -> Int[Tensor, "batch pos"]:
    """``[batch, pos]`` index in :data:`ROLES` of each padded column's role (-1 on padding)."""
    ids = torch.full(batch.tokens.shape, -1, dtype=torch.long)
    for r, t in enumerate(tags):
        off = int(batch.offset[r])
        ids[r, off : off + len(t)] = torch.tensor([ROLES.index(x) for x in t])
    return ids.to(batch.tokens.device)


# --------------------------------------------------------------------------------------------------
# Flows between roles


@dataclass(frozen=True)
class RoleFlowResult:
    """Saliency between roles, per prompt and layer.

    Attributes:
        means: ``[n, layer, role_to, role_from]`` mean saliency ``I_l(i, j)`` over the causal pairs whose
            query ``i`` has role ``role_to`` and key ``j < i`` role ``role_from`` (NaN: no such pair).
        counts: ``[n, role_to, role_from]`` how many pairs each mean is over (the same in every layer).
        gather: ``[n, layer, role]`` mean saliency from the demonstrations' text tokens (content, stop
            words) into the demonstrations' positions of each role: what each role gathers (the claim's
            numbers; NaN: no pair).
        gather_counts: ``[n, role]`` how many pairs each ``gather`` mean is over.
        heads: ``"sum"`` (``|sum_h A*dL/dA|``, the paper) or ``"abs"`` (``sum_h |A*dL/dA|``).
        multi_token_labels: Prompts with a label word of several tokens (there :meth:`paper_flows` differs
            from :func:`anchorlens.saliency`, whose p_k is the first sub-token).
    """

    means: RoleMatrix
    counts: Int[Tensor, "n role_to role_from"]
    gather: Float[Tensor, "n layer role"]
    gather_counts: Int[Tensor, "n role"]
    heads: str = "sum"
    multi_token_labels: int = 0

    @property
    def n_layers(self) -> int:
        return int(self.means.shape[1])

    def merged(self, groups: Mapping[str, Iterable[Cell]]) -> dict[str, Float[Tensor, "n layer"]]:
        """Per group of ``(role_to, role_from)`` cells (``"*"``: any role), the mean saliency over all its
        pairs, ``[n, layer]`` (cells weighted by their pair counts; NaN where a prompt has none).

        Raises:
            AnchorlensError: an unknown role name.
        """
        out = {}
        for name, cells in groups.items():
            mask = torch.zeros(len(ROLES), len(ROLES), dtype=torch.bool)
            for to, src in cells:
                rows = slice(None) if to == "*" else ROLES.index(check_roles([to])[0])
                cols = slice(None) if src == "*" else ROLES.index(check_roles([src])[0])
                mask[rows, cols] = True
            w = (self.counts * mask).to(torch.float64)[:, None]  # [n, 1, to, from]
            total = (self.means.to(torch.float64).nan_to_num() * w).sum((2, 3))
            out[name] = (total / w.sum((2, 3))).float()
        return out

    def paper_flows(self) -> dict[str, Float[Tensor, "n layer"]]:
        """The paper's S_wp, S_pq and S_ww, ``[n, layer]`` each, merged from the role cells."""
        return self.merged(PAPER_GROUPS)

    def matrix(self, layers: Iterable[int] | None = None) -> Float[Tensor, "role_to role_from"]:
        """The role x role matrix averaged over prompts (those with pairs in a cell) and ``layers``
        (default: all)."""
        picked = self.means[:, list(layers) if layers is not None else slice(None)]
        return picked.nanmean(0).mean(0)

    def thirds(self) -> dict[str, list[list[float | None]] | None]:
        """:meth:`matrix` over the shallow, middle and deep thirds of the layers (None: an empty third)."""
        names = ("shallow", "middle", "deep")
        return {
            n: _plain(self.matrix(r)) if r else None
            for n, r in zip(names, layer_thirds(self.n_layers), strict=True)
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "roles": list(ROLES),
            "heads": self.heads,
            "n_layers": self.n_layers,
            "multi_token_labels": self.multi_token_labels,
            "thirds": self.thirds(),
            "gather": _plain(self.gather.nanmean(0)),
            "per_example": {
                "means": _plain(self.means),
                "counts": self.counts.tolist(),
                "gather": _plain(self.gather),
                "gather_counts": self.gather_counts.tolist(),
            },
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RoleFlowResult:
        """The result :meth:`to_json` wrote (from its per-example numbers)."""
        ex = d["per_example"]
        means, gather = (_tensor(ex[k], torch.float32) for k in ("means", "gather"))
        counts, gather_counts = (_tensor(ex[k], torch.long) for k in ("counts", "gather_counts"))
        return cls(means, counts, gather, gather_counts, d["heads"], d["multi_token_labels"])


_OTHER_CELLS = [(a, b) for a in ROLES for b in ROLES if a != "label" and (a, b) != ("target", "label")]
#: The paper's pair sets as role cells: S_wp text -> label words, S_pq label words -> target, S_ww the rest.
PAPER_GROUPS: dict[str, list[Cell]] = {
    "S_wp": [("label", "*")],
    "S_pq": [("target", "label")],
    "S_ww": _OTHER_CELLS,
}


def _plain(t: Tensor) -> Any:
    """Nested lists of a tensor, NaN as None (plain JSON)."""
    return [_plain(x) for x in t] if t.dim() else (None if math.isnan(float(t)) else float(t))


def _tensor(data: Any, dtype: torch.dtype) -> Tensor:
    """The tensor of nested lists written by :func:`_plain` (None as NaN)."""

    def nan(x: Any) -> Any:
        return [nan(v) for v in x] if isinstance(x, list) else (math.nan if x is None else x)

    return torch.tensor(nan(data), dtype=dtype)


def _saliency_maps(
    model: Model,
    prompts: Sequence[IclPrompt],
    heads: str,
    lean: bool,
    fwd_hooks: HookSpec,
    options: LoopOptions,
) -> Iterator[tuple[list[int], PromptBatch, list[int], Float[Tensor, "layer batch query key"]]]:
    """``(indices, batch, layers, I)``: the saliency ``I_l`` of the batch's rows in ``layers``, by the path
    :func:`anchorlens.saliency` would take (every layer at once, or one at a time on the lean path)."""
    steps = saliency_steps(
        model, prompts, lean=lean, per_head=heads == "abs", fwd_hooks=fwd_hooks, options=options
    )
    for index, batch, layers, grads in steps:  # [layer, batch, head, q, k] -> [layer, batch, q, k]
        g = grads.float()
        yield index, batch, layers, g.sum(-3).abs() if heads == "sum" else g.abs().sum(-3)


def _pair_masks(
    batch: PromptBatch, ids: Int[Tensor, "batch pos"]
) -> tuple[
    Float[Tensor, "batch query key"],
    Float[Tensor, "batch pos role"],
    Float[Tensor, "batch pos role"],
    Float[Tensor, "batch pos"],
]:
    """The causal pairs ``j < i <= target`` of real tokens, each column's role one-hot, the same for the
    demonstrations' positions only, and the demonstrations' text columns (padded coordinates)."""
    width = ids.shape[1]
    ar = torch.arange(width, device=ids.device)
    real = ids >= 0
    valid = (ar[None, :, None] > ar[None, None, :]) & real[:, :, None] & real[:, None, :]
    valid &= ar[None, :, None] <= batch.target[:, None, None]
    onehot = torch.nn.functional.one_hot(ids.clamp_min(0), len(ROLES)).float() * real[..., None]
    start = torch.tensor([p.query_start for p in batch.prompts], device=ids.device) + batch.offset
    demo = ar[None, :] < start[:, None]
    text = torch.zeros_like(real)
    for r in TEXT_ROLES:
        text |= ids == ROLES.index(r)
    return valid.float(), onehot, onehot * demo[..., None], (text & demo).float()


def role_flows(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    batch_size: int = 4,
    heads: str = "sum",
    fwd_hooks: HookSpec = None,
    padding_side: PaddingSide = "right",
    memory: str = "auto",
    progress: bool | str = False,
) -> RoleFlowResult:
    """Saliency flows between token roles, per prompt and layer (see the module docstring).

    Args:
        model: A ``HookedTransformer`` (or anything :func:`anchorlens.saliency` accepts).
        prompts: Labelled prompts from :func:`anchorlens.build_prompts` (the loss needs the gold label).
        batch_size: Prompts per forward and backward pass.
        heads: ``"sum"`` (the paper) or ``"abs"``, as :func:`anchorlens.saliency`.
        fwd_hooks: The caller's hooks, active in every pass before the gradient multipliers.
        memory: ``"exact"``, ``"lean"`` (one layer at a time) or ``"auto"``, as :func:`anchorlens.saliency`.

    Raises:
        AnchorlensError: no prompts; bad ``heads`` or ``memory``; see :func:`anchorlens.saliency`.
    """
    lean = saliency_path(model, prompts, heads, "none", "never", memory, batch_size) == "lean"
    tags = [token_roles(p, model) for p in prompts]
    n, n_layers, n_roles = len(prompts), model.cfg.n_layers, len(ROLES)
    means = torch.full((n, n_layers, n_roles, n_roles), math.nan)
    counts = torch.zeros(n, n_roles, n_roles, dtype=torch.long)
    gather = torch.full((n, n_layers, n_roles), math.nan)
    gather_counts = torch.zeros(n, n_roles, dtype=torch.long)
    options = LoopOptions(batch_size, padding_side, progress, "role flows")
    seen: PromptBatch | None = None
    for index, batch, layers, sal in _saliency_maps(model, prompts, heads, lean, fwd_hooks, options):
        if batch is not seen:  # once per batch
            seen = batch
            valid, onehot, demo_onehot, text = _pair_masks(batch, _role_ids(batch, [tags[i] for i in index]))
            exact = [x.double() for x in (onehot, valid, demo_onehot, text)]  # counts beyond 2**24 stay exact
            pairs = torch.einsum("bir,bij,bjs->brs", exact[0], exact[1], exact[0])
            demo_pairs = torch.einsum("bir,bij,bj->br", exact[2], exact[1], exact[3])
            counts[index], gather_counts[index] = pairs.round().long().cpu(), demo_pairs.round().long().cpu()
        flows = sal * valid  # [layer, batch, q, k]
        sums = torch.einsum("bir,lbij,bjs->lbrs", onehot, flows, onehot)
        gathered = torch.einsum("bir,lbij,bj->lbr", demo_onehot, flows, text)
        for r, i in enumerate(index):
            means[i, layers] = (sums[:, r] / pairs[r]).float().cpu()
            gather[i, layers] = (gathered[:, r] / demo_pairs[r]).float().cpu()
    multi = sum(any(len(s) > 1 for s in p.label_spans) for p in prompts)
    return RoleFlowResult(means, counts, gather, gather_counts, heads, multi)


# --------------------------------------------------------------------------------------------------
# Both together: the experiment's one entry


@dataclass(frozen=True)
class RolesResult:
    """The token-roles experiment on one prompt set: the flows between roles and (unless skipped) each
    role's isolation."""

    flows: RoleFlowResult
    isolation: RoleIsolationResult | None = None

    def to_json(self) -> dict[str, Any]:
        iso = self.isolation.to_json() if self.isolation is not None else None
        return {"flows": self.flows.to_json(), "isolation": iso}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> RolesResult:
        iso = RoleIsolationResult.from_json(d["isolation"]) if d.get("isolation") else None
        return cls(RoleFlowResult.from_json(d["flows"]), iso)


def roles(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    k: int = 5,
    isolate: bool = True,
    batch_size: int = 4,
    heads: str = "sum",
    fwd_hooks: HookSpec = None,
    padding_side: PaddingSide = "right",
    memory: str = "auto",
    progress: bool = False,
) -> RolesResult:
    """:func:`role_flows` and (``isolate=True``) :func:`role_isolation` on the same prompts.

    Raises:
        AnchorlensError: no prompts; k out of 1..n_layers (checked before any forward pass); see both.
    """
    if len(prompts) == 0:
        raise AnchorlensError("No prompts to measure.")
    if isolate:
        resolve_layers(model.cfg.n_layers, "first", k)
    kw: dict[str, Any] = dict(batch_size=batch_size, fwd_hooks=fwd_hooks, padding_side=padding_side)
    flows = role_flows(model, prompts, heads=heads, memory=memory, progress=progress, **kw)
    iso = role_isolation(model, prompts, k=k, progress=progress, **kw) if isolate else None
    return RolesResult(flows, iso)
