"""Anchor distances for error diagnosis (paper section 3.3, Figure 6; reference section 7).

If label words are anchors, the target's query picks a class by matching the label words' keys, so two
classes whose label-word keys look alike *to the queries* should be confused. The paper compares:

- **predicted confusion**: the keys ``k_i`` at the label-word positions of one prompt (all heads
  concatenated, at one layer), projected on the first ``M`` principal directions of the target's
  queries over many prompts and scaled by those directions' spread; ``||k̂_i - k̂_j||`` divided by the
  largest such distance. Small means "the queries can hardly tell class i from class j".
- **actual confusion**: per class pair, the AUC-ROC of ``p_i / (p_i + p_j)`` (label-restricted
  probabilities) for "gold = i" on the examples whose gold label is i or j. Small (towards 0.5) means
  the model mixes the two classes up; 1 means it always ranks them right.

Both matrices have their diagonal set to 1 (for display, as the paper). anchorlens adds one agreement
number, the Spearman correlation of the two matrices' off-diagonal entries (positive = the anchor
geometry explains the errors), and the same number at every layer, from one forward pass per batch.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.core.backends import check_windows
from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import FwdHook, capture_hooks
from anchorlens.core.metrics import Predictions
from anchorlens.core.prefix import prefix_safe
from anchorlens.core.prompts import IclPrompt, get_tokenizer
from anchorlens.core.runner import HookSpec, LoopOptions, PredictionBuffer, observe_batches
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.diagnosis.confusion import (
    Confusion,
    check_components,
    concat_heads,
    confusion_spearman,
    distance_confusion,
    pairwise_auc,
    pca_project,
)
from anchorlens.types import Model, PaddingSide, PrefixPolicy


@dataclass(frozen=True)
class DiagnosisResult:
    """Predicted (anchor-key distance) and actual (AUC) confusion between every pair of classes.

    Attributes:
        labels: Class names, in class-id order (the matrices' row/column order).
        layer: Layer the keys and queries of ``predicted_confusion`` come from.
        predicted_confusion: ``[class, class]`` normalised key distance in ``[0, 1]``; small = likely
            confused; diagonal 1.
        actual_confusion: ``[class, class]`` pairwise AUC in ``[0, 1]``; 1 = never confused, 0.5 = the
            model cannot tell the pair apart, below 0.5 = it systematically ranks the pair the wrong way
            round; diagonal 1. NaN exactly at ``undefined_pairs``.
        spearman: Spearman correlation of the two matrices' defined off-diagonal entries (positive = the
            anchor geometry predicts the errors); None when fewer than 3 pairs are defined or either
            matrix is constant there.
        spearman_by_layer: The same correlation with keys and queries taken at each layer.
        predicted_by_layer: ``[layer, class, class]`` predicted confusion at every layer.
        undefined_pairs: Class pairs ``(i, j)``, ``i < j``, whose AUC is undefined because one of the two
            classes has no test example (written as null by :meth:`to_json`).
        n_prompts: Number of prompts (queries) used.
        n_components: Number of principal components ``M``.
        explained_variance_ratio: Share of the queries' variance each component explains at ``layer``.
        support: Number of prompts whose gold label is each class.
        predicted_counts: Number of prompts predicted as each class.
        hooks: The key and query hook names read (``hook_rot_k``/``hook_rot_q`` on rotary models).
        predictions: The model's predictions on the prompts (from the same forward passes).
    """

    labels: tuple[str, ...]
    layer: int
    predicted_confusion: Confusion
    actual_confusion: Confusion
    spearman: float | None
    spearman_by_layer: tuple[float | None, ...]
    predicted_by_layer: Float[Tensor, "layer class class"]
    undefined_pairs: tuple[tuple[int, int], ...] = ()
    n_prompts: int = 0
    n_components: int = 10
    explained_variance_ratio: tuple[float, ...] = ()
    support: tuple[int, ...] = ()
    predicted_counts: tuple[int, ...] = ()
    hooks: tuple[str, str] = ("hook_k", "hook_q")
    predictions: Predictions | None = field(default=None, repr=False)

    @property
    def n_layers(self) -> int:
        return len(self.spearman_by_layer)

    @property
    def best_layer(self) -> int | None:
        """The layer whose predicted confusion agrees best with the actual one (None if none defined)."""
        scored = [(rho, layer) for layer, rho in enumerate(self.spearman_by_layer) if rho is not None]
        return max(scored)[1] if scored else None

    @property
    def never_predicted(self) -> tuple[str, ...]:
        """Classes the model never predicted (their AUCs are still defined: they rank, not count)."""
        return tuple(n for n, c in zip(self.labels, self.predicted_counts, strict=True) if c == 0)

    @property
    def accuracy(self) -> float | None:
        return None if self.predictions is None else self.predictions.accuracy

    def most_confused(self, k: int = 3) -> dict[str, list[tuple[str, str, float]]]:
        """The ``k`` most confused class pairs (smallest values) of each matrix, most confused first:
        ``{"predicted": [(name_i, name_j, value), ...], "actual": [...]}``. Undefined pairs are skipped."""
        out: dict[str, list[tuple[str, str, float]]] = {}
        for name, matrix in (("predicted", self.predicted_confusion), ("actual", self.actual_confusion)):
            pairs = [
                (float(matrix[i, j]), i, j)
                for i in range(len(self.labels))
                for j in range(i + 1, len(self.labels))
                if math.isfinite(float(matrix[i, j]))
            ]
            pairs.sort(key=lambda t: t[0])
            out[name] = [(self.labels[i], self.labels[j], v) for v, i, j in pairs[:k]]
        return out

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; undefined values are ``null``, never NaN."""
        names = self.labels
        return {
            "layer": self.layer,
            "labels": list(names),
            "predicted_confusion": _matrix_json(self.predicted_confusion),
            "actual_confusion": _matrix_json(self.actual_confusion),
            "spearman": self.spearman,
            "spearman_by_layer": list(self.spearman_by_layer),
            "best_layer": self.best_layer,
            "most_confused": {
                k: [{"pair": [a, b], "value": v} for a, b, v in pairs]
                for k, pairs in self.most_confused(3).items()
            },
            "undefined_pairs": [
                {"pair": [names[i], names[j]], "reason": _undefined_reason(self, i, j)}
                for i, j in self.undefined_pairs
            ],
            "never_predicted": list(self.never_predicted),
            "support": dict(zip(names, self.support, strict=True)),
            "predicted_counts": dict(zip(names, self.predicted_counts, strict=True)),
            "accuracy": self.accuracy,
            "n_prompts": self.n_prompts,
            "n_components": self.n_components,
            "explained_variance_ratio": list(self.explained_variance_ratio),
            "hooks": {"key": self.hooks[0], "query": self.hooks[1]},
            "predicted_by_layer": [_matrix_json(m) for m in self.predicted_by_layer],
            "predictions": None if self.predictions is None else self.predictions.to_json(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DiagnosisResult:
        """The result :meth:`to_json` wrote (nulls back to NaN)."""
        names = tuple(d["labels"])
        index = {name: c for c, name in enumerate(names)}

        def matrix(m: Any) -> Tensor:
            return torch.tensor(
                [[math.nan if x is None else x for x in row] for row in m], dtype=torch.float64
            )

        return cls(
            labels=names,
            layer=d["layer"],
            predicted_confusion=matrix(d["predicted_confusion"]),
            actual_confusion=matrix(d["actual_confusion"]),
            spearman=d["spearman"],
            spearman_by_layer=tuple(d["spearman_by_layer"]),
            predicted_by_layer=torch.stack([matrix(m) for m in d["predicted_by_layer"]]),
            undefined_pairs=tuple(
                (min(i, j), max(i, j))
                for i, j in ((index[u["pair"][0]], index[u["pair"][1]]) for u in d["undefined_pairs"])
            ),
            n_prompts=d["n_prompts"],
            n_components=d["n_components"],
            explained_variance_ratio=tuple(d["explained_variance_ratio"]),
            support=tuple(d["support"][n] for n in names),
            predicted_counts=tuple(d["predicted_counts"][n] for n in names),
            hooks=(d["hooks"]["key"], d["hooks"]["query"]),
            predictions=None if d.get("predictions") is None else Predictions.from_json(d["predictions"]),
        )


def _matrix_json(m: Tensor) -> list[list[float | None]]:
    return [[float(x) if math.isfinite(float(x)) else None for x in row] for row in m]


def _undefined_reason(result: DiagnosisResult, i: int, j: int) -> str:
    empty = [result.labels[c] for c in (i, j) if result.support and result.support[c] == 0]
    return f"no test example with gold label {' or '.join(empty)}" if empty else "undefined AUC"


@dataclass(frozen=True)
class KeysQueries:
    """What one pass over the prompts captured, with every layer's heads concatenated.

    Attributes:
        keys: ``[layer, class, d]`` key at prompt 0's label-word positions (first sub-token), averaged
            over the demonstrations of each class when there are several; ``d = n_heads * d_head``
            (grouped-query keys repeated per query head).
        queries: ``[layer, n, d]`` query at each prompt's target.
        predictions: Label-word predictions of the same forward passes.
        hooks: Key and query hook names read.
    """

    keys: Float[Tensor, "layer class d"]
    queries: Float[Tensor, "layer n d"]
    predictions: Predictions
    hooks: tuple[str, str]


def kq_hook_names(model: Model) -> tuple[str, str]:
    """``("hook_rot_k", "hook_rot_q")`` on rotary models (the keys and queries the scores use), else
    ``("hook_k", "hook_q")``."""
    rotary = getattr(getattr(model, "cfg", None), "positional_embedding_type", None) == "rotary"
    return ("hook_rot_k", "hook_rot_q") if rotary else ("hook_k", "hook_q")


# --------------------------------------------------------------------------------------------------
# Capture and the experiment


def default_layer(n_layers: int) -> int:
    """About two thirds of the depth: ``2 * n_layers // 3`` (the paper's layer 32 of GPT2-XL's 48)."""
    return min(2 * n_layers // 3, n_layers - 1)


def _check_prompts(prompts: Sequence[IclPrompt]) -> int:
    if len(prompts) == 0:
        raise AnchorlensError("No prompts to diagnose (were they all dropped as too long?).")
    first = prompts[0]
    n_classes = first.n_classes
    missing = [c for c in range(n_classes) if c not in first.demo_labels]
    if missing:
        raise AnchorlensError(
            f"The keys come from prompt 0's label words, but its demonstrations lack class id(s) {missing}; "
            "build the prompts with at least one demonstration per class (build_prompts(..., shots=1) "
            "without resample)."
        )
    unlabelled = sum(p.label < 0 for p in prompts)
    if unlabelled:
        raise AnchorlensError(
            f"{unlabelled} prompt(s) have no gold label (-1); the actual confusion (AUC) needs labelled "
            "queries."
        )
    return n_classes


def collect_keys_queries(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    batch_size: int = 8,
    padding_side: PaddingSide = "right",
    fwd_hooks: HookSpec = None,
    progress: bool | str = False,
    prefix: PrefixPolicy = "auto",
) -> KeysQueries:
    """One forward pass per batch with hooks on every layer's keys and queries (rotated ones on rotary
    models): prompt 0's label-word keys, every prompt's target query, and the label-word predictions.
    The caller's ``fwd_hooks`` run before the capture. When the prompts share their demonstrations
    (``prefix``, see :func:`anchorlens.predict`) the keys come from the demonstrations' one pass and the
    queries from the query batches on its cache.

    Raises:
        AnchorlensError: no prompts; prompt 0 lacks a demonstration of some class; a key/query hook never
            ran (a model without TransformerLens attention hooks).
    """
    n_classes = _check_prompts(prompts)
    k_name, q_name = kq_hook_names(model)
    n_layers, n_heads = int(model.cfg.n_layers), int(model.cfg.n_heads)
    preds = PredictionBuffer(prompts)
    store: dict[str, dict[int, Tensor]] = {}
    queries: list[Tensor | None] = [None] * len(prompts)
    keys: Tensor | None = None

    @prefix_safe  # keys from the demonstrations' pass, queries from the query batches
    def own(batch: PromptBatch) -> list[Any]:
        if batch.kind == "prefix":  # the demonstrations: their label-word keys, kept for every query batch
            return _capture_hooks(batch, n_layers, n_heads, (k_name, None), demo_keys)
        store.clear()
        # a query batch's key hook sees its own tokens only (keys of the cache are not re-emitted)
        return _capture_hooks(
            batch, n_layers, n_heads, (None if batch.kind == "query" else k_name, q_name), store
        )

    demo_keys: dict[str, dict[int, Tensor]] = {}
    options = LoopOptions(batch_size, padding_side, progress, desc="diagnose")
    loop: dict[str, Any] = dict(fwd_hooks=fwd_hooks, own_hooks=own, options=options, prefix=prefix)
    for index, batch in observe_batches(model, prompts, preds, **loop):
        key_row = index.index(0) if 0 in index else None
        q_store = store.get(q_name, {})
        k_store = demo_keys.get(k_name, {}) if batch.kind == "query" else store.get(k_name, {})
        missing = [layer for layer in range(n_layers) if layer not in q_store or layer not in k_store]
        if missing:
            raise AnchorlensError(
                f"blocks.{missing[0]}.attn.{q_name}/{k_name} never ran, so keys and queries cannot be "
                "read; anchor distances need a TransformerLens HookedTransformer (or a model with the "
                "same attention hook names)."
            )
        q = torch.stack([q_store[layer] for layer in range(n_layers)])  # [layer, batch, d]
        for r, i in enumerate(index):
            queries[i] = q[:, r]
        if key_row is not None:
            k_row = 0 if batch.kind == "query" else key_row  # the prefix pass holds prompt 0's keys
            demo = torch.stack([k_store[layer][k_row] for layer in range(n_layers)])  # [layer, demo, d]
            labs = batch.demo_labels[key_row].cpu()
            keys = torch.stack([demo[:, labs == c].mean(1) for c in range(n_classes)], dim=1)
    assert keys is not None
    stacked = torch.stack([q for q in queries if q is not None], dim=1)  # [layer, n, d]
    return KeysQueries(keys=keys, queries=stacked, predictions=preds.result(), hooks=(k_name, q_name))


def _capture_hooks(
    batch: PromptBatch,
    n_layers: int,
    n_heads: int,
    names: tuple[str | None, str | None],
    store: dict[str, dict[int, Tensor]],
) -> list[FwdHook]:
    """Hooks storing each layer's target queries ``[batch, d]`` and label-word keys ``[batch, demo, d]``
    (``names``: the key and query hook suffixes; None captures no keys or no queries)."""
    rows = torch.arange(len(batch), device=batch.tokens.device)

    def reduce_q(q: Float[Tensor, "batch pos head d_head"], layer: int) -> Tensor:
        return concat_heads(q[rows, batch.target].float(), n_heads).cpu()

    def reduce_k(k: Float[Tensor, "batch pos kv_head d_head"], layer: int) -> Tensor:
        return concat_heads(k[rows[:, None], batch.label_positions].float(), n_heads).cpu()

    k_name, q_name = names
    layers = range(n_layers)
    out = []
    if q_name is not None:
        out += capture_hooks({f"blocks.{layer}.attn.{q_name}": layer for layer in layers}, reduce_q, store)
    if k_name is not None:
        out += capture_hooks({f"blocks.{layer}.attn.{k_name}": layer for layer in layers}, reduce_k, store)
    return out


def _label_names(model: Model, prompts: Sequence[IclPrompt], names: Sequence[str] | None) -> tuple[str, ...]:
    n_classes = prompts[0].n_classes
    if names is None:
        task = getattr(prompts, "task", None)
        names = getattr(task, "label_names", None)
    if names is None:
        try:
            tok = get_tokenizer(model)
            names = [tok.decode([t]).strip() or str(c) for c, t in enumerate(prompts[0].label_token_ids)]
        except AnchorlensError:
            names = [str(c) for c in range(n_classes)]
    if len(names) != n_classes:
        raise AnchorlensError(f"Got {len(names)} label names for {n_classes} classes.")
    return tuple(str(x) for x in names)


def _actual_confusion(
    pred: Predictions, names: Sequence[str]
) -> tuple[Confusion, tuple[tuple[int, int], ...], tuple[int, ...]]:
    """Pairwise AUC, the pairs where it is undefined (warned about) and the test support of each class."""
    # pred.probs in float64, so that no pair's ratio is lost to float32 underflow.
    actual = pairwise_auc(pred.label_logits.double().softmax(-1), pred.labels)
    n_classes = len(names)
    undefined = tuple(
        (i, j) for i in range(n_classes) for j in range(i + 1, n_classes) if math.isnan(float(actual[i, j]))
    )
    support = tuple(int((pred.labels == c).sum()) for c in range(n_classes))
    if undefined:
        absent = [names[c] for c in range(n_classes) if support[c] == 0]
        warnings.warn(
            f"Actual confusion is undefined for {len(undefined)} class pair(s): no test example of "
            f"{', '.join(absent)}. They are listed in undefined_pairs (null in to_json); add test prompts "
            "of those classes.",
            stacklevel=3,
        )
    return actual, undefined, support


def _by_layer(
    kq: KeysQueries, actual: Confusion, n_components: int, layer: int
) -> tuple[list[Tensor], list[float | None], tuple[float, ...]]:
    """Predicted confusion and its Spearman agreement with ``actual`` at every layer, and the explained
    variance ratios of the principal components at ``layer``."""
    by_layer: list[Tensor] = []
    rhos: list[float | None] = []
    ratio: tuple[float, ...] = ()
    for lay in range(kq.queries.shape[0]):
        queries, keys = kq.queries[lay].double().numpy(), kq.keys[lay].double().numpy()
        proj, var_ratio = pca_project(queries, keys, n_components)
        m = distance_confusion(torch.from_numpy(proj))
        by_layer.append(m)
        rhos.append(confusion_spearman(m, actual))
        if lay == layer:
            ratio = tuple(float(x) for x in var_ratio)
    return by_layer, rhos, ratio


def diagnose(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    layer: int | None = None,
    n_components: int = 10,
    batch_size: int = 8,
    padding_side: PaddingSide = "right",
    label_names: Sequence[str] | None = None,
    fwd_hooks: HookSpec = None,
    progress: bool | str = False,
    prefix: PrefixPolicy = "auto",
) -> DiagnosisResult:
    """Predicted vs actual confusion between classes (the paper's Figure 6), and their agreement per layer.

    Setup (reference section 7): build ``prompts`` with one fixed demonstration set, one per class
    (``build_prompts(model, task, n=..., shots=1, seed=...)``). The keys come from prompt 0's label
    words (first sub-token; with several demonstrations of a class, their keys are averaged), the
    queries from every prompt's target, the actual confusion from the same prompts' predictions.

    Args:
        model: A ``HookedTransformer`` (keys/queries read at ``hook_rot_k``/``hook_rot_q`` on rotary
            models, ``hook_k``/``hook_q`` otherwise; grouped-query keys repeated per query head).
        prompts: Labelled prompts whose first prompt holds every class among its demonstrations.
        layer: Layer of the reported matrices (default :func:`default_layer`: about 2/3 of the depth).
            Every layer's agreement is computed anyway (``spearman_by_layer``), from the same passes.
        n_components: PCA components ``M`` (the paper: 10); at most the number of prompts.
        batch_size: Prompts per forward pass.
        padding_side: ``"right"`` (default) or ``"left"``.
        label_names: Class names for the output (default: the task's, else the decoded label words).
        fwd_hooks: The caller's hooks (see :mod:`anchorlens.core.runner`), run before the key/query capture.
        progress: Show a progress bar (a string is used as its description).
        prefix: Run the shared demonstrations once (the prefix policy, see :func:`anchorlens.predict`).

    Raises:
        AnchorlensError: ``layer`` outside ``[0, n_layers - 1]``; ``n_components`` larger than the number
            of prompts; prompt 0 lacking a class; prompts without a gold label.
    """
    n_layers = int(model.cfg.n_layers)
    if layer is None:
        layer = default_layer(n_layers)
    if not 0 <= layer < n_layers:
        raise AnchorlensError(
            f"layer={layer} is out of range: this model has {n_layers} layers, so layer must be in "
            f"[0, {n_layers - 1}] (default: {default_layer(n_layers)}, about two thirds of the depth)."
        )
    _check_prompts(prompts)
    check_windows(model, [len(p) for p in prompts], "Diagnosis' key distances")
    check_components(n_components, len(prompts), int(model.cfg.n_heads) * int(model.cfg.d_head))
    names = _label_names(model, prompts, label_names)

    loop: dict[str, Any] = dict(batch_size=batch_size, padding_side=padding_side, progress=progress)
    kq = collect_keys_queries(model, prompts, fwd_hooks=fwd_hooks, prefix=prefix, **loop)
    pred = kq.predictions
    actual, undefined, support = _actual_confusion(pred, names)
    n_classes = len(names)
    by_layer, rhos, ratio = _by_layer(kq, actual, n_components, layer)
    counts = torch.bincount(pred.predictions, minlength=n_classes)
    return DiagnosisResult(
        labels=names,
        layer=layer,
        predicted_confusion=by_layer[layer],
        actual_confusion=actual,
        spearman=rhos[layer],
        spearman_by_layer=tuple(rhos),
        predicted_by_layer=torch.stack(by_layer),
        undefined_pairs=undefined,
        n_prompts=len(prompts),
        n_components=n_components,
        explained_variance_ratio=ratio,
        support=support,
        predicted_counts=tuple(int(x) for x in counts),
        hooks=kq.hooks,
        predictions=pred,
    )
