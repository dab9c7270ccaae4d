"""Label-position task vectors (beyond the paper): do the label positions carry the task?

Zheng et al. (arXiv 2406.16007) report that each label position of an ICL prompt carries a *local* task
vector: patching the label-position states into dummy inputs recovers few-shot accuracy where a single
*global* task vector (Hendel et al., arXiv 2310.15916: the last token's state, patched at the query) does
not. If label words are anchors (Wang et al.), the local vectors should recover more.

Design (anchorlens' choices, documented):

- **source**: the ICL prompts (:func:`anchorlens.build_prompts`; 1 shot per class by default).
- **receiver**: the same query after *dummy demonstrations*: the same template, the same label words in the
  same order, each demonstration's text replaced by a neutral ``filler`` (``"..."``), so the label
  positions exist in the receiver (:mod:`~anchorlens.experiments.taskvec.receivers`). Their positions differ
  from the source's; label k maps to label k by its slot ``(class, rank within the class)``.
- **hook point**: ``blocks.{l}.hook_resid_post``, the residual stream after block l, replaced there so
  layers l+1.. recompute from it. ``resid_post`` rather than ``resid_pre``: layer l is then the last layer
  whose output is copied (layer 0's ``resid_pre`` would be the context-free embedding), and the last
  layer's ``resid_post`` at the target is the state the unembedding reads.
- **local**: per layer l, the source's state at each demonstration's label word (first sub-token, the
  paper's p_i), patched at the receiver's label word of the same slot. ``source="mean"`` (default,
  Zheng et al.'s task-level vector): the mean over the source prompts per slot; ``"own"``: each query's own
  prompt's states. Under one demonstration set per seed (the paper's setting) the label-position states do not
  depend on the query (causal attention), so both coincide; they differ under resampled demonstrations.
- **global** (Hendel et al.): the mean over the source prompts (or, ``"own"``, the prompt's own) of the
  target's (last token's) state at layer l, patched at the receiver's target at layer l.
- **random** control: as local, but the source states of one demonstration-*text* token per demonstration
  (the same relative place in its text for every prompt, seeded), patched at the receiver's label words:
  does *any* state of the demonstration carry the task, or the label word's?
- **baselines**: the receiver unpatched (``dummy``), the query alone in the template (``zero_shot``) and the
  full ICL prompt (``icl``, the ceiling).
- **accuracy recovered** = ``(acc_patched - acc_dummy) / (acc_icl - acc_dummy)``: 1 = the ICL accuracy,
  0 = no better than dummy demonstrations; None where ICL is no different from the dummy prompt.

Every number has a 95% percentile bootstrap interval over queries (:mod:`anchorlens.stats.bootstrap`). Each
method costs one batched pass over all queries per layer; the caller's ``fwd_hooks`` are active in every pass
(source, receivers and baselines), before the patches.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from jaxtyping import Float, Int
from torch import Tensor

from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import capture_hooks, patch_positions_hooks, resid_name
from anchorlens.core.metrics import Predictions
from anchorlens.core.prefix import full_prompts_only, prefix_safe
from anchorlens.core.prompts import IclPrompt
from anchorlens.core.runner import (
    BatchHooks,
    HookSpec,
    LoopOptions,
    PredictionBuffer,
    collect_predictions,
    observe_batches,
    predict,
)
from anchorlens.core.tasks import Task
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.taskvec.receivers import (
    FILLER,
    Slot,
    check_prompts,
    dummy_prompt,
    random_text_positions,
    slot_order,
    task_of,
    zero_shot_prompt,
)
from anchorlens.stats.bootstrap import RESAMPLES, band
from anchorlens.types import FwdHook, Model, PaddingSide, PrefixPolicy

METHODS = ("local", "global", "random")
SOURCES = ("mean", "own")
BASELINES = ("icl", "dummy", "zero_shot")
POINT = "hook_resid_post"


def check_layers(n_layers: int, layers: Sequence[int] | None) -> tuple[int, ...]:
    """The layers to patch (default all; negative indices count from the end), sorted.

    Raises:
        AnchorlensError: a layer out of range, or none.
    """
    if layers is None:
        return tuple(range(n_layers))
    out = set()
    for layer in layers:
        if not -n_layers <= int(layer) < n_layers:
            raise AnchorlensError(f"Layer {layer} is out of range for a {n_layers}-layer model.")
        out.add(int(layer) % n_layers)
    if not out:
        raise AnchorlensError("No layers to patch.")
    return tuple(sorted(out))


@dataclass(frozen=True)
class SourceStates:
    """Residual states of the source prompts at ``hook_resid_post`` of each captured layer.

    Attributes:
        layers: The captured layers (the ``layer`` axis).
        slots: The label slots ``(class, rank)`` (the ``slot`` axis).
        label: ``[src, layer, slot, d_model]`` states at the label words.
        random: ``[src, layer, slot, d_model]`` states at the random control's text tokens.
        target: ``[src, layer, d_model]`` states at the target.
        own: ``src`` is one row per prompt (``source="own"``); else one row, the mean over prompts.
    """

    layers: tuple[int, ...]
    slots: tuple[Slot, ...]
    label: Float[Tensor, "src layer slot d_model"]
    random: Float[Tensor, "src layer slot d_model"]
    target: Float[Tensor, "src layer d_model"]
    own: bool


def _gathered(batch: PromptBatch, slots: Sequence[Slot], seed: int) -> Int[Tensor, "batch column"]:
    """Per row, the padded columns to read: the label words by slot, the random tokens by slot, the target."""
    cols = []
    for r, p in enumerate(batch.prompts):
        order, off = slot_order(p, slots), int(batch.offset[r])
        label, rand = [0] * len(slots), [0] * len(slots)
        for k, (lp, rp) in enumerate(zip(p.label_positions, random_text_positions(p, seed), strict=True)):
            label[order[k]], rand[order[k]] = lp + off, rp + off
        cols.append([*label, *rand, p.target + off])
    return torch.tensor(cols, dtype=torch.long, device=batch.tokens.device)


def source_states(
    model: Model,
    prompts: Sequence[IclPrompt],
    layers: Sequence[int],
    *,
    source: str = "mean",
    seed: int = 42,
    fwd_hooks: HookSpec = None,
    options: LoopOptions | None = None,
) -> tuple[SourceStates, Predictions]:
    """One pass over the source prompts: their states at the label words, the random tokens and the target
    in ``layers`` (per prompt, or summed to the mean), and their predictions (the ICL baseline)."""
    slots = check_prompts(prompts)
    if source not in SOURCES:
        raise AnchorlensError(f"source must be one of {SOURCES}, got {source!r}.")
    n, k = len(prompts), len(slots)
    d = int(model.cfg.d_model)
    rows = n if source == "own" else 1
    # own: one row per prompt, kept in float32; mean: a float64 running sum
    acc = torch.zeros(rows, len(layers), 2 * k + 1, d, dtype=torch.float32 if rows > 1 else torch.float64)
    store: dict[str, dict[int, Tensor]] = {}
    current: dict[str, Tensor] = {}

    def reduce(x: Tensor, layer: int) -> Tensor:
        cols = current["cols"]
        return x[torch.arange(len(cols), device=x.device)[:, None], cols].detach().double().cpu()

    def hooks(batch: PromptBatch) -> list[FwdHook]:
        current["cols"] = _gathered(batch, slots, seed)
        return capture_hooks({resid_name(layer, POINT): layer for layer in layers}, reduce, store)

    preds = PredictionBuffer(prompts)
    loop = dict(fwd_hooks=fwd_hooks, own_hooks=full_prompts_only(hooks), options=options, prefix="never")
    for index, _ in observe_batches(model, prompts, preds, **loop):
        got = torch.stack([store[POINT][layer] for layer in layers], 1)  # [batch, layer, column, d]
        if source == "own":
            acc[index] = got.to(acc.dtype)
        else:
            acc[0] += got.sum(0)
        store.clear()
    states = (acc if source == "own" else acc / n).float()
    label, rand, target = states[:, :, :k], states[:, :, k : 2 * k], states[:, :, 2 * k]
    return SourceStates(tuple(layers), slots, label, rand, target, source == "own"), preds.result()


def patch_hooks(receivers: Sequence[IclPrompt], states: SourceStates, method: str, layer: int) -> BatchHooks:
    """The patches of ``method`` at ``layer`` for batches of ``receivers`` (rows matched to prompts through
    ``batch.indices``; under ``states.own`` receiver i gets source prompt i's states).

    Marked :func:`~anchorlens.core.prefix.prefix_safe` where the patch is the same for every receiver inside
    the shared dummy demonstrations (mean local or random states: patched once, in the ``"prefix"`` batch) or
    lies in the query alone (global): the loop may then run the dummy demonstrations once per pass.

    Raises:
        AnchorlensError: an unknown method, a layer not captured, or own states for another prompt count.
    """
    if method not in METHODS:
        raise AnchorlensError(f"method must be one of {METHODS}, got {method!r}.")
    if layer not in states.layers:
        raise AnchorlensError(f"Layer {layer} was not captured (captured: {list(states.layers)}).")
    if states.own and states.target.shape[0] != len(receivers):
        raise AnchorlensError(
            f"Own states of {states.target.shape[0]} prompts cannot patch {len(receivers)} receivers."
        )
    li = states.layers.index(layer)
    table = states.label if method == "local" else states.random

    def entries(p: IclPrompt, src: int, kind: str) -> list[tuple[int, Tensor]]:
        """(prompt position, vector) pairs of one row; a query batch holds no label word (they are cached)."""
        if method == "global":
            return [] if kind == "prefix" else [(p.target, states.target[src, li])]
        if kind == "query":
            return []
        order = slot_order(p, states.slots)
        return [(lp, table[src, li, order[k]]) for k, lp in enumerate(p.label_positions)]

    def hooks(batch: PromptBatch) -> list[FwdHook]:
        rows: list[int] = []
        pos: list[int] = []
        vecs: list[Tensor] = []
        # a prefix batch is the shared demonstrations (one row, no index): only mean states patch it
        indices = batch.indices if batch.kind != "prefix" else (0,)
        for r, (i, p) in enumerate(zip(indices, batch.prompts, strict=True)):
            for position, vector in entries(p, i if states.own else 0, batch.kind):
                rows.append(r)
                pos.append(position + int(batch.offset[r]))
                vecs.append(vector)
        if not rows:
            return []
        device = batch.tokens.device
        rows_t, pos_t = torch.tensor(rows, device=device), torch.tensor(pos, device=device)
        return patch_positions_hooks(layer, rows_t, pos_t, torch.stack(vecs), POINT)

    return prefix_safe(hooks) if method == "global" or not states.own else full_prompts_only(hooks)


def recovered(acc: float, icl: float, dummy: float) -> float | None:
    """``(acc - dummy) / (icl - dummy)``; None when ICL and dummy accuracies are (about) equal."""
    gap = icl - dummy
    return None if abs(gap) < 1e-9 else (acc - dummy) / gap + 0.0  # + 0.0: no -0.0


@dataclass(frozen=True)
class TaskVectorResult:
    """Accuracy of the dummy-demonstration prompts with each method's states patched in, per layer.

    Attributes:
        layers: The patched layers (the ``layer`` axis).
        methods: The methods run (the ``method`` axis): ``"local"``, ``"global"``, ``"random"``.
        predicted: ``[method, n, layer]`` the patched receiver's predicted class per query.
        icl: The full ICL prompts' predictions (the ceiling).
        dummy: The receivers' predictions, unpatched.
        zero_shot: The query alone in the template.
        n_layers: The model's layers (for the middle third the claim averages over).
        source: ``"mean"`` (task-level vectors) or ``"own"`` (each prompt's states).
        filler: The dummy demonstrations' text.
        seed: Seeds the random control's positions.
        intervals: 95% bootstrap intervals over queries: per method ``[lower per layer, upper per layer]``,
            ``"recovered/<method>"`` the same for accuracy recovered, and per baseline ``[[lower], [upper]]``.
    """

    layers: tuple[int, ...]
    methods: tuple[str, ...]
    predicted: Int[Tensor, "method n layer"]
    icl: Predictions = field(repr=False)
    dummy: Predictions = field(repr=False)
    zero_shot: Predictions = field(repr=False)
    n_layers: int = 0
    source: str = "mean"
    filler: str = FILLER
    seed: int = 42
    intervals: dict[str, list[list[float | None]]] = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.icl)

    def correct(self, method: str) -> np.ndarray:
        """``[n, layer]`` 1 where the patched receiver predicts the gold label."""
        m = self.predicted[self.methods.index(method)]
        return (m == self.icl.labels[:, None]).double().numpy()

    def baseline_correct(self, name: str) -> np.ndarray:
        """``[n]`` 1 where the baseline (``"icl"``, ``"dummy"``, ``"zero_shot"``) is right."""
        pred: Predictions = getattr(self, name)
        return (pred.predictions == pred.labels).double().numpy()

    def accuracy(self, method: str) -> list[float]:
        """Per layer, the accuracy of the receivers patched with ``method``'s states."""
        return [float(x) for x in self.correct(method).mean(0)]

    @property
    def baselines(self) -> dict[str, float]:
        """Accuracy of the full ICL prompts, the unpatched receivers and the zero-shot prompts."""
        return {b: float(self.baseline_correct(b).mean()) for b in BASELINES}

    def recovered(self, method: str) -> list[float | None]:
        """Per layer, ``(acc - acc_dummy) / (acc_icl - acc_dummy)`` (None when ICL equals dummy)."""
        base = self.baselines
        return [recovered(a, base["icl"], base["dummy"]) for a in self.accuracy(method)]

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "methods": list(self.methods),
            "n_layers": self.n_layers,
            "source": self.source,
            "filler": self.filler,
            "seed": self.seed,
            "point": POINT,
            "accuracy": {m: self.accuracy(m) for m in self.methods},
            "recovered": {m: self.recovered(m) for m in self.methods},
            **{f"{b}_accuracy": v for b, v in self.baselines.items()},
            "intervals": self.intervals,
            "predicted": {m: self.predicted[i].tolist() for i, m in enumerate(self.methods)},
            **{b: getattr(self, b).to_json() for b in BASELINES},
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TaskVectorResult:
        """The result :meth:`to_json` wrote."""
        methods = tuple(d["methods"])
        n, n_l = len(d["icl"]["labels"]), len(d["layers"])
        predicted = torch.tensor([d["predicted"][m] for m in methods], dtype=torch.long)
        return cls(
            layers=tuple(d["layers"]),
            methods=methods,
            predicted=predicted.reshape(len(methods), n, n_l),
            **{b: Predictions.from_json(d[b]) for b in BASELINES},
            n_layers=d["n_layers"],
            source=d["source"],
            filler=d["filler"],
            seed=d["seed"],
            intervals=d.get("intervals", {}),
        )


def _intervals(result: TaskVectorResult, seed: int, resamples: int) -> dict[str, list[list[float | None]]]:
    """Per method and baseline, the 95% bootstrap intervals over queries (paired: same rows everywhere)."""
    icl, dummy = result.baseline_correct("icl"), result.baseline_correct("dummy")
    out: dict[str, list[list[float | None]]] = {}
    for m in result.methods:
        c = result.correct(m)
        lo, hi = band(lambda x: x.mean(0), c, seed=seed, resamples=resamples)
        out[m] = [lo, hi]

        def ratio(x: np.ndarray, i: np.ndarray, d: np.ndarray) -> np.ndarray:
            gap = i.mean() - d.mean()
            return (x.mean(0) - d.mean()) / gap if abs(gap) >= 1e-9 else np.full(x.shape[1], math.nan)

        lo, hi = band(ratio, c, icl, dummy, seed=seed, resamples=resamples)
        out[f"recovered/{m}"] = [lo, hi]
    for b in BASELINES:
        lo, hi = band(
            lambda x: x.mean(0, keepdims=True), result.baseline_correct(b), seed=seed, resamples=resamples
        )
        out[b] = [lo, hi]
    return out


def taskvec(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    task: Task | None = None,
    layers: Sequence[int] | None = None,
    methods: Sequence[str] = METHODS,
    source: str = "mean",
    filler: str = FILLER,
    seed: int = 42,
    batch_size: int = 8,
    padding_side: PaddingSide = "right",
    fwd_hooks: HookSpec = None,
    progress: bool = False,
    prefix: PrefixPolicy = "auto",
    resamples: int = RESAMPLES,
) -> TaskVectorResult:
    """Patch label-position states (local), the target's state (global) or random demonstration-text states
    of the ICL prompts into the same queries after dummy demonstrations; accuracy per layer.

    Args:
        model: A ``HookedTransformer`` or ``TransformerBridge`` (``blocks.{l}.hook_resid_post``).
        prompts: From :func:`anchorlens.build_prompts`: every prompt with the same label words and
            demonstrations per class (the paper: one fixed demonstration set per seed, 1 shot per class).
        task: The prompts' task (default: the ``PromptSet``'s); the receivers use its template.
        layers: Layers to patch (default: all).
        methods: Among ``"local"``, ``"global"``, ``"random"``.
        source: ``"mean"`` (mean over prompts: task-level vectors) or ``"own"`` (each prompt's states).
        filler: The dummy demonstrations' text.
        seed: Seeds the random control's positions (and the bootstrap).
        fwd_hooks: The caller's hooks, active in every pass, before the patches.
        prefix: The prefix policy of the receivers' passes (see :func:`anchorlens.predict`): under reuse the
            dummy demonstrations run once per pass, with the mean label-word or random states patched in
            (every receiver gets the same ones there); own local or random states run full prompts.
        resamples: Bootstrap resamples of the intervals.

    Raises:
        AnchorlensError: no prompts; prompts with different label words or demonstrations per class; a
            layer out of range; an unknown method or source; a filler that changes the query's tokens.
    """
    if len(prompts) == 0:
        raise AnchorlensError("No prompts: task vectors need at least one ICL prompt (were all dropped?).")
    bad = [m for m in methods if m not in METHODS]
    if bad or not methods:
        raise AnchorlensError(f"methods must be among {METHODS}, got {list(methods)}.")
    if source not in SOURCES:
        raise AnchorlensError(f"source must be one of {SOURCES}, got {source!r}.")
    chosen = check_layers(int(model.cfg.n_layers), layers)
    check_prompts(prompts)
    t = task_of(prompts, task)
    receivers = [dummy_prompt(model, t, p, filler) for p in prompts]
    zero = [zero_shot_prompt(model, t, p) for p in prompts]

    def opts(desc: str) -> LoopOptions:
        return LoopOptions(batch_size, padding_side, desc if progress else False)

    states, icl = source_states(
        model, prompts, chosen, source=source, seed=seed, fwd_hooks=fwd_hooks, options=opts("source")
    )
    kw: dict[str, Any] = dict(
        batch_size=batch_size, padding_side=padding_side, fwd_hooks=fwd_hooks, prefix=prefix
    )
    dummy = predict(model, receivers, progress="dummy" if progress else False, **kw)
    zero_shot = predict(model, zero, progress="zero-shot" if progress else False, **kw)
    predicted = torch.zeros(len(methods), len(prompts), len(chosen), dtype=torch.long)
    for mi, m in enumerate(methods):
        for li, layer in enumerate(chosen):
            pred = collect_predictions(
                model,
                receivers,
                fwd_hooks=fwd_hooks,
                own_hooks=patch_hooks(receivers, states, m, layer),
                options=opts(f"{m}, layer {layer}"),
                prefix=prefix,
            )
            predicted[mi, :, li] = pred.predictions
    result = TaskVectorResult(
        chosen,
        tuple(methods),
        predicted,
        icl,
        dummy,
        zero_shot,
        int(model.cfg.n_layers),
        source,
        filler,
        seed,
    )
    return replace(result, intervals=_intervals(result, seed, resamples))
