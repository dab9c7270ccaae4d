"""Predictions and the paper's agreement metrics.

- **prediction**: argmax over the logits of the label words' first tokens at the target (reference 1.4);
- **accuracy**: share of predictions equal to the gold label;
- **label loyalty**: share of examples whose prediction equals a reference run's (e.g. the unmodified model);
- **word loyalty**: mean Jaccard similarity of the full-vocabulary top-k token sets (k=5) at the target,
  against the reference run. It sees changes the label prediction hides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from anchorlens.errors import AnchorlensError
from anchorlens.types import LabelLogits, Labels, TopK


@dataclass(frozen=True)
class Predictions:
    """What a model answered on a set of prompts.

    Attributes:
        label_logits: ``[n, class]`` logits of each class's label word (first token) at the target.
        topk: ``[n, k]`` ids of the top-k full-vocabulary tokens at the target (for word loyalty).
        labels: ``[n]`` gold class ids (-1 where unknown).
    """

    label_logits: LabelLogits
    topk: TopK
    labels: Labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def predictions(self) -> Labels:
        """``[n]`` predicted class ids."""
        return self.label_logits.argmax(-1)

    @property
    def probs(self) -> LabelLogits:
        """``[n, class]`` softmax over the label words only."""
        return self.label_logits.float().softmax(-1)

    @property
    def accuracy(self) -> float:
        return accuracy(self)

    def to_json(self) -> dict[str, Any]:
        return {
            "accuracy": self.accuracy,
            "predictions": self.predictions.tolist(),
            "labels": self.labels.tolist(),
            "probs": [[round(float(x), 6) for x in row] for row in self.probs],
            "label_logits": self.label_logits.tolist(),
            "topk": self.topk.tolist(),
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Predictions:
        """The predictions :meth:`to_json` wrote (label logits, top-k ids and gold labels)."""
        return cls(
            label_logits=torch.tensor(d["label_logits"], dtype=torch.float32),
            topk=torch.tensor(d["topk"], dtype=torch.long).reshape(len(d["labels"]), -1),
            labels=torch.tensor(d["labels"], dtype=torch.long),
        )


def accuracy(pred: Predictions) -> float:
    """Share of examples predicted as their gold label (examples without a gold label are refused)."""
    if len(pred) == 0:
        raise AnchorlensError("accuracy of zero predictions is undefined.")
    if bool((pred.labels < 0).any()):
        raise AnchorlensError("Some prompts have no gold label (-1); accuracy needs labelled queries.")
    return float((pred.predictions == pred.labels).double().mean())


def _check_pair(pred: Predictions, ref: Predictions) -> None:
    if len(pred) != len(ref) or len(pred) == 0:
        raise AnchorlensError(
            f"Loyalty compares two runs on the same prompts; got {len(pred)} and {len(ref)} predictions."
        )


def label_loyalty(pred: Predictions, ref: Predictions) -> float:
    """Share of examples where ``pred`` predicts the same class as the reference run ``ref``."""
    _check_pair(pred, ref)
    return float((pred.predictions == ref.predictions).double().mean())


def word_loyalty(pred: Predictions, ref: Predictions, k: int | None = None) -> float:
    """Mean Jaccard similarity of the top-k vocabulary sets at the target, ``pred`` vs ``ref``.

    ``k`` defaults to the number of top tokens stored (5 unless predicted with another ``top_k``).
    """
    _check_pair(pred, ref)
    k = k or min(pred.topk.shape[1], ref.topk.shape[1])
    if k > min(pred.topk.shape[1], ref.topk.shape[1]):
        raise AnchorlensError(f"word_loyalty k={k} but only {pred.topk.shape[1]} top tokens were stored.")
    return float(jaccard(pred.topk[:, :k], ref.topk[:, :k]).mean())


def jaccard(a: TopK, b: TopK) -> torch.Tensor:
    """``[n]`` Jaccard similarity |A∩B| / |A∪B| of each row's token sets."""
    inter = (a[:, :, None] == b[:, None, :]).any(-1).sum(-1).float()
    union = a.shape[1] + b.shape[1] - inter
    return inter / union
