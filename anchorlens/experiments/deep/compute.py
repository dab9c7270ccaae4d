"""Deep layers: does the target's attention to the label words predict the answer? (paper 2.3, Fig. 5)

For layer l and class i, ``a_{l,i}`` is the target's post-softmax attention to the label word(s) of
class i, summed over heads and over that class's demonstrations. ``AUCROC_l`` measures how well these
attentions predict the **model's own prediction** (not the gold label), as in Appendix E:

- only classes predicted at least once are kept;
- two kept classes: the raw attention to the second class's label word scores "predicted second class";
- more: the attentions normalised over the kept classes, one-vs-one macro AUC (Hand & Till).

``R_l = sum_{i<=l} (AUCROC_i - 0.5) / sum_i (AUCROC_i - 0.5)`` is the cumulative share of the above-chance
correlation reached by layer l. The paper: AUCROC_l approaches ~0.8 in deep layers; R_l stays near 0 in
shallow layers and rises in the middle and deep ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import capture_hooks, pattern_name
from anchorlens.core.layers import third_means
from anchorlens.core.metrics import Predictions
from anchorlens.core.prefix import prefix_safe
from anchorlens.core.prompts import IclPrompt
from anchorlens.core.runner import HookSpec, LoopOptions, PredictionBuffer, observe_batches
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model, PaddingSide, PrefixPolicy

# The verdict "AUCROC rises in deep layers" needs the deep third's mean AUC to exceed the shallow third's
# by at least this much (AUC differences below it are within the noise of ~100 prompts).


def auc_by_class(
    scores: Float[Tensor, "n class"], classes: Sequence[int] | Tensor, what: str = "predictions"
) -> tuple[float | None, str]:
    """The paper's AUC of label-word attention against class ids (the model's predictions in the paper).

    Returns ``(auc, note)``; ``auc`` is None (never NaN) when fewer than two classes occur, and ``note``
    says why.
    """
    from sklearn.metrics import roc_auc_score

    pred = np.asarray(classes, dtype=int)
    kept = sorted(set(pred.tolist()))
    if len(kept) < 2:
        return None, (
            f"AUC undefined: the {what} contain only class {kept} on these prompts; AUC needs at least "
            "two classes (use more or more varied prompts)."
        )
    s = scores[:, kept].double().numpy()
    if len(kept) == 2:
        return float(roc_auc_score(pred == kept[1], s[:, 1])), ""
    s = s / np.clip(s.sum(1, keepdims=True), 1e-300, None)
    return float(roc_auc_score(pred, s, multi_class="ovo", labels=kept)), ""


def cumulative_r(aucroc: Sequence[float]) -> list[float] | None:
    """``R_l`` from an AUCROC curve; None when the total above-chance mass is not positive."""
    excess = np.asarray(aucroc, dtype=float) - 0.5
    total = excess.sum()
    if not total > 0:
        return None
    return (np.cumsum(excess) / total).tolist()


@dataclass(frozen=True)
class DeepResult:
    """Per-layer target -> label-word attention and its agreement with the predictions.

    Attributes:
        attention: ``[n, layer, class]`` attention of the target to each class's label words (sum over
            heads and shots); explicit layer-then-class order.
        predictions: The unmodified run (from the same forward passes).

    ``aucroc``/``R`` follow the paper (against the model's predictions); ``curve("gold")`` gives the same
    against the gold labels (the reading of a maintainer's reply; useful when the model predicts one
    class only, where the paper's AUC is undefined).
    """

    attention: Float[Tensor, "n layer class"]
    predictions: Predictions = field(repr=False)

    @property
    def n_layers(self) -> int:
        return int(self.attention.shape[1])

    def curve(
        self, against: str = "prediction"
    ) -> tuple[tuple[float | None, ...], tuple[float, ...] | None, str]:
        """``(AUCROC_l per layer, R_l per layer or None, note)`` against ``"prediction"`` or ``"gold"``."""
        if against not in ("prediction", "gold"):
            raise AnchorlensError(f"against must be 'prediction' or 'gold', got {against!r}.")
        reference = self.predictions.predictions if against == "prediction" else self.predictions.labels
        aucs: list[float | None] = []
        note = ""
        for layer in range(self.n_layers):
            auc, why = auc_by_class(self.attention[:, layer], reference, what=f"{against}s")
            aucs.append(auc)
            note = note or why
        r = cumulative_r([a for a in aucs if a is not None]) if None not in aucs else None
        if r is None and not note:
            note = "R undefined: the AUCROC curve is never above chance in total."
        return tuple(aucs), tuple(r) if r is not None else None, note

    @property
    def aucroc(self) -> tuple[float | None, ...]:
        """AUCROC_l against the model's predictions (None where undefined)."""
        return self.curve()[0]

    @property
    def R(self) -> tuple[float, ...] | None:
        """R_l against the model's predictions (None when undefined)."""
        return self.curve()[1]

    @property
    def note(self) -> str:
        return self.curve()[2]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DeepResult:
        """The result :meth:`to_json` wrote (from its ``attention`` and ``predictions``)."""
        return cls(torch.tensor(d["attention"], dtype=torch.float32), Predictions.from_json(d["predictions"]))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n_layers": self.n_layers,
            "accuracy": self.predictions.accuracy,
            "predicted_class_counts": np.bincount(
                self.predictions.predictions.numpy(), minlength=self.attention.shape[2]
            ).tolist(),
        }
        for against, suffix in (("prediction", ""), ("gold", "_gold")):
            aucs, r, note = self.curve(against)
            out[f"aucroc{suffix}"] = list(aucs)
            out[f"R{suffix}"] = list(r) if r is not None else None
            if note:
                out[f"note{suffix}"] = note
            shallow, _, deep = third_means(aucs) if None not in aucs else (None, None, None)  # type: ignore[arg-type]
            if shallow is not None and deep is not None:  # estimates; the verdict is the claim's
                out[f"mean_aucroc_shallow_third{suffix}"] = shallow
                out[f"mean_aucroc_deep_third{suffix}"] = deep
        out["attention"] = self.attention.tolist()
        out["predictions"] = self.predictions.to_json()
        return out


def target_to_labels(
    pattern: Float[Tensor, "batch head query key"], batch: PromptBatch
) -> Float[Tensor, "batch demo"]:
    """Each row's target -> label-word attention, summed over heads: ``[batch, demo]``."""
    rows = torch.arange(len(batch), device=pattern.device)
    to_target = pattern[rows, :, batch.target]  # [batch, head, key]
    cols = batch.label_positions[:, None, :].expand(-1, pattern.shape[1], -1)
    return to_target.gather(2, cols).sum(1)


def deep(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    fwd_hooks: HookSpec = None,
    batch_size: int = 8,
    padding_side: PaddingSide = "right",
    progress: bool | str = False,
    prefix: PrefixPolicy = "auto",
) -> DeepResult:
    """Target -> label-word attention per layer and class, AUCROC_l and R_l, in one forward per batch.

    ``fwd_hooks`` (the caller's, see :mod:`anchorlens.core.runner`) run before the capture, so the attention read
    is the one the modified model uses, and the predictions are the modified model's. The target and the
    label words' columns are read from each query batch on the demonstrations' cache when prompts share them
    (``prefix``, see :func:`anchorlens.predict`).

    Raises:
        AnchorlensError: no prompts, or prompts whose demonstrations lack a class.
    """
    if len(prompts) == 0:
        raise AnchorlensError("No prompts to analyse.")
    n_layers = model.cfg.n_layers
    n_classes = prompts[0].n_classes
    attention = torch.zeros(len(prompts), n_layers, n_classes)
    preds = PredictionBuffer(prompts)
    store: dict[str, dict[int, Tensor]] = {}

    @prefix_safe  # the capture reads the target's row, which a query batch holds
    def own(batch: PromptBatch) -> list[Any]:
        missing = set(range(n_classes)) - set(batch.demo_labels[0].tolist())
        if missing:
            raise AnchorlensError(
                f"The demonstrations lack class(es) {sorted(missing)}; every class needs one."
            )
        store.clear()
        if batch.kind == "prefix":  # no target among the demonstrations
            return []
        names = {pattern_name(layer): layer for layer in range(n_layers)}
        return capture_hooks(names, lambda pattern, _: target_to_labels(pattern, batch), store)

    options = LoopOptions(batch_size, padding_side, progress, desc="deep")
    loop: dict[str, Any] = dict(fwd_hooks=fwd_hooks, own_hooks=own, options=options, prefix=prefix)
    for index, batch in observe_batches(model, prompts, preds, **loop):
        got = store.get("hook_pattern", {})
        demo = torch.stack([got[layer] for layer in range(n_layers)], 1).float().cpu()  # [b, L, demo]
        by_class = torch.zeros(len(batch), n_layers, n_classes)
        by_class.scatter_add_(2, batch.demo_labels.cpu()[:, None, :].expand(-1, n_layers, -1), demo)
        attention[index] = by_class
    return DeepResult(attention, preds.result())
