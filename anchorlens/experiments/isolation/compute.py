"""Shallow-layer isolation of label words (paper section 2.2, Figure 4, Appendix D).

Isolating a position p in a layer cuts every attention edge from the earlier tokens into p, so no
information flows into p there. The paper's test of its first hypothesis: isolating the **label words**
in the **first** k layers should change the prediction far more than isolating them in the last k layers,
or isolating as many **random** non-label words. Effects are measured against the unmodified run:

- **label loyalty**: share of examples whose predicted label is unchanged;
- **word loyalty**: mean Jaccard similarity of the top-5 vocabulary tokens at the target;
- **accuracy** against the gold labels.

Random positions (anchorlens' choice, documented): for each prompt, as many positions as it has
demonstrations, drawn without replacement from the demonstrations' *text* tokens (never a label word,
a formatting token, the query or the target), seeded by ``(seed, prompt index)``, and the same in every
isolated layer. The paper's code drew them anew in every layer call, unseeded, from any token before the
target.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from jaxtyping import Bool
from torch import Tensor

from anchorlens.core.backends import require_attention_edits
from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import cut_edges_hooks
from anchorlens.core.metrics import Predictions, label_loyalty, word_loyalty
from anchorlens.core.prefix import check_policy, full_prompts_only, prefix_safe
from anchorlens.core.prompts import IclPrompt
from anchorlens.core.runner import HookSpec, LoopOptions, collect_predictions, predict
from anchorlens.errors import AnchorlensError
from anchorlens.types import FwdHook, Model, PaddingSide, PrefixPolicy

ANCHORS = ("label", "random")
LAYER_SETS = ("first", "last")


_Run = TypeVar("_Run", bound="RunJson")
_Sweep = TypeVar("_Sweep", bound="SweepJson")


def resolve_layers(n_layers: int, layers: Sequence[int] | str, k: int | None = None) -> list[int]:
    """Layer indices from ``"first"``/``"last"`` (with ``k``) or explicit indices (negative allowed).

    Raises:
        AnchorlensError: k out of 1..n_layers, an index out of range, or no layers.
    """
    if isinstance(layers, str):
        if layers not in LAYER_SETS:
            raise AnchorlensError(f"layers must be 'first', 'last' or a list of indices, got {layers!r}.")
        if k is None or not 1 <= k <= n_layers:
            raise AnchorlensError(f"k must be between 1 and the model's {n_layers} layers, got {k}.")
        return list(range(k)) if layers == "first" else list(range(n_layers - k, n_layers))
    out = []
    for layer in layers:
        if not -n_layers <= layer < n_layers:
            raise AnchorlensError(f"Layer {layer} is out of range for a {n_layers}-layer model.")
        out.append(layer % n_layers)
    if not out:
        raise AnchorlensError("No layers to isolate.")
    return sorted(set(out))


def random_positions(prompt: IclPrompt, seed: int, index: int = 0) -> tuple[int, ...]:
    """As many demonstration-text positions as the prompt has demonstrations, seeded by ``(seed, index)``."""
    pool = prompt.text_positions()
    n = len(prompt.label_positions)
    if len(pool) < n:
        raise AnchorlensError(
            f"Prompt {index} has {len(pool)} demonstration text tokens, fewer than its {n} label words; "
            "random isolation needs at least as many."
        )
    rng = np.random.default_rng([seed, index])
    return tuple(sorted(int(x) for x in rng.choice(pool, size=n, replace=False)))


def isolation_mask(
    batch: PromptBatch, positions: Sequence[Sequence[int]], allow_empty: bool = False
) -> Bool[Tensor, "batch query key"]:
    """``[batch, query, key]`` True on every edge from an earlier key into each row's ``positions``
    (unpadded prompt coordinates; shifted here by the row's offset). Positions outside the batch's tokens
    (a ``"query"`` batch on a cache holds no demonstration) are skipped. ``allow_empty``: a row may have no
    positions (a token role absent from a prompt), its edges all kept.

    Raises:
        AnchorlensError: a row with no positions (unless ``allow_empty``), or a position outside its prompt.
    """
    width = batch.tokens.shape[1]
    cut = torch.zeros(len(batch), width, width, dtype=torch.bool, device=batch.tokens.device)
    keys = torch.arange(width, device=cut.device)
    for r, (prompt, rows) in enumerate(zip(batch.prompts, positions, strict=True)):
        if len(rows) == 0 and not allow_empty:
            raise AnchorlensError(f"Row {r}: empty position set; give at least one position to isolate.")
        off = int(batch.offset[r])
        for p in rows:
            if not 0 <= p < len(prompt):
                raise AnchorlensError(f"Position {p} is outside its {len(prompt)}-token prompt.")
            if 0 <= p + off < width:
                cut[r, p + off] = (keys < p + off) & (keys >= off)
    return cut


def isolation_hooks(
    batch: PromptBatch, positions: Sequence[Sequence[int]], layers: Sequence[int], mode: str = "pre"
) -> list[FwdHook]:
    """Hooks isolating each row's ``positions`` in ``layers`` (see :func:`anchorlens.core.hooks.cut_edges_hooks`);
    none for a batch where no such position is among the tokens run (queries on a cache)."""
    if batch.kind == "query":
        return []
    return cut_edges_hooks(layers, isolation_mask(batch, positions), mode)


def isolate(
    prompts: Sequence[IclPrompt],
    layers: Sequence[int],
    *,
    anchors: str = "label",
    mode: str = "pre",
    seed: int = 42,
) -> Callable[[PromptBatch], list[FwdHook]]:
    """``fwd_hooks`` for any experiment: isolate the label words (or as many seeded random demonstration
    words) of ``prompts`` in ``layers``. Rows are matched to prompts through ``batch.indices``, so pass
    the same prompts to the experiment, e.g. ``al.saliency(model, ps, fwd_hooks=al.isolate(ps, range(5)))``.

    Raises:
        AnchorlensError: unknown ``anchors`` or ``mode``.
    """
    if anchors not in ANCHORS or mode not in ("pre", "post"):
        raise AnchorlensError(
            f"anchors must be among {ANCHORS} and mode 'pre' or 'post'; got {anchors!r}, {mode!r}."
        )
    chosen = (
        [p.label_positions for p in prompts]
        if anchors == "label"
        else [random_positions(p, seed, i) for i, p in enumerate(prompts)]
    )
    layers = list(layers)

    def hooks(batch: PromptBatch) -> list[FwdHook]:
        if batch.kind != "full" and anchors != "label":
            raise AnchorlensError(
                f"Random-word isolation met a {batch.kind!r} batch: its positions differ per prompt, so it "
                "needs full prompts (its hooks are marked full_prompts_only)."
            )
        if batch.kind == "prefix":  # the shared demonstrations: any prompt's label words are theirs
            return cut_edges_hooks(layers, isolation_mask(batch, [chosen[0]]), mode)
        return isolation_hooks(batch, [chosen[i] for i in batch.indices], layers, mode)

    # Label words are the same positions for every prompt sharing the demonstrations, so the prefix can be
    # cut once for all queries; random words differ per prompt, so their cut prefixes differ too.
    return prefix_safe(hooks) if anchors == "label" else full_prompts_only(hooks)


class RunJson:
    """``to_json``/``from_json`` of a frozen run dataclass: its fields as they are, and its optional
    ``predictions`` (per query, for paired intervals) as :class:`Predictions` JSON. Shared by isolation's
    and token-role isolation's runs."""

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "predictions"}  # type: ignore[arg-type]
        predictions = getattr(self, "predictions", None)
        if predictions is not None:
            out["predictions"] = predictions.to_json()
        return out

    @classmethod
    def from_json(cls: type[_Run], d: dict[str, Any]) -> _Run:
        """The run :meth:`to_json` wrote."""
        pred = Predictions.from_json(d["predictions"]) if d.get("predictions") else None
        kept = {f.name: d[f.name] for f in fields(cls) if f.name != "predictions"}  # type: ignore[arg-type]
        return cls(**kept, predictions=pred)  # type: ignore[call-arg]  # the subclass's dataclass fields


class SweepJson:
    """``to_json``/``from_json`` of a sweep's result: its ``runs`` (of the subclass's ``RUN`` type), the
    cut's ``mode`` and the unmodified ``reference`` run. Numbers only: the one verdict is the experiment's
    claim's. Shared by isolation's and token-role isolation's results."""

    RUN: ClassVar[type[RunJson]]
    runs: tuple[RunJson, ...]
    reference: Predictions
    mode: str

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "reference_accuracy": self.reference.accuracy,
            "results": [r.to_json() for r in self.runs],
            "reference": self.reference.to_json(),
        }

    @classmethod
    def from_json(cls: type[_Sweep], d: dict[str, Any]) -> _Sweep:
        """The result :meth:`to_json` wrote (from its ``results``, ``reference`` and ``mode``)."""
        runs = tuple(cls.RUN.from_json(r) for r in d["results"])
        return cls(runs, Predictions.from_json(d["reference"]), d["mode"])  # type: ignore[call-arg]


@dataclass(frozen=True)
class IsolationRun(RunJson):
    """One isolation setting and its effect against the unmodified run."""

    anchors: str
    layers: str
    k: int
    label_loyalty: float
    word_loyalty: float
    accuracy: float
    predictions: Predictions | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class IsolationResult(SweepJson):
    """All settings of a sweep plus the unmodified reference run."""

    RUN: ClassVar[type[RunJson]] = IsolationRun
    runs: tuple[IsolationRun, ...]
    reference: Predictions = field(repr=False)
    mode: str = "pre"

    def get(self, anchors: str, layers: str, k: int) -> IsolationRun:
        for run in self.runs:
            if (run.anchors, run.layers, run.k) == (anchors, layers, k):
                return run
        raise KeyError((anchors, layers, k))


def isolation(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    ks: Sequence[int] = (5,),
    anchors: Sequence[str] = ANCHORS,
    layer_sets: Sequence[str] = LAYER_SETS,
    mode: str = "pre",
    seed: int = 42,
    batch_size: int = 8,
    padding_side: PaddingSide = "right",
    reference: Predictions | None = None,
    fwd_hooks: HookSpec = None,
    progress: bool = False,
    prefix: PrefixPolicy = "auto",
) -> IsolationResult:
    """Isolate label words or random words in the first or last k layers; loyalties vs the unmodified run.

    Args:
        model: A ``HookedTransformer`` (any model with TL's ``hook_attn_scores``/``hook_pattern`` names).
        prompts: From :func:`anchorlens.build_prompts` (the paper: one fixed demonstration set per seed).
        ks: Numbers of isolated layers (paper: 5; Appendix D: 1, 3, 5, 7).
        anchors: ``"label"`` and/or ``"random"`` (see the module docstring for how random words are drawn).
        layer_sets: ``"first"`` and/or ``"last"``.
        mode: ``"pre"`` (-inf before the softmax, the paper's code) or ``"post"`` (zero after it).
        seed: Seeds the random positions.
        reference: The unmodified run, if already computed (else it is computed here, with ``fwd_hooks``).
        fwd_hooks: The caller's hooks, active in the reference run and in every isolated run (before the
            cuts), so loyalties compare isolated vs not isolated on the caller's modified model.
        prefix: The prefix policy (see :func:`anchorlens.predict`): label-word isolation cuts the same
            edges inside the shared demonstrations for every prompt, so it may reuse them; random words
            (per prompt) run full prompts under every policy (with a warning under ``"always"``).
    """
    if len(prompts) == 0:
        raise AnchorlensError("No prompts to isolate.")
    if mode not in ("pre", "post"):
        raise AnchorlensError(f"mode must be 'pre' or 'post', got {mode!r}.")
    for a in anchors:
        if a not in ANCHORS:
            raise AnchorlensError(f"anchors must be among {ANCHORS}, got {a!r}.")
    check_policy(prefix)
    # Refuse a model that would ignore the cuts before even the reference run.
    require_attention_edits(model, ("hook_attn_scores" if mode == "pre" else "hook_pattern",))
    n_layers = model.cfg.n_layers
    kw: dict[str, Any] = dict(batch_size=batch_size, padding_side=padding_side, prefix=prefix)
    ref = (
        reference
        if reference is not None
        else predict(model, prompts, fwd_hooks=fwd_hooks, progress="reference" if progress else False, **kw)
    )
    runs = []
    for a in anchors:
        for s in layer_sets:
            for k in ks:
                cut = isolate(prompts, resolve_layers(n_layers, s, k), anchors=a, mode=mode, seed=seed)
                desc = f"{a} words, {s} {k} layers" if progress else False
                options = LoopOptions(batch_size, padding_side, desc)
                # the cuts are the experiment's own hooks: their mark, not the caller's policy, decides reuse
                pred = collect_predictions(
                    model, prompts, fwd_hooks=fwd_hooks, own_hooks=cut, options=options, prefix=prefix
                )
                loyal = (label_loyalty(pred, ref), word_loyalty(pred, ref))
                runs.append(IsolationRun(a, s, k, *loyal, pred.accuracy, predictions=pred))
    return IsolationResult(tuple(runs), ref, mode)
