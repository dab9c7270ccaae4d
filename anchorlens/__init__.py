"""anchorlens: "Label Words are Anchors" (Wang et al., EMNLP 2023) for TransformerLens.

Quick start::

    import anchorlens as al
    model = al.load_model("smollm2-135m")          # offline; or any TransformerLens name
    task = al.load_task("sst2")
    prompts = al.build_prompts(model, task, n=100, shots=1, seed=42)
    pred = al.predict(model, prompts)
    pred.accuracy

Names are imported on first use (PEP 562), so ``import anchorlens`` and ``anchorlens --help`` load
neither torch nor TransformerLens.
"""

# ruff: noqa: F401  (the imports below are re-exports: __all__ is built from the lazy table)
from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

from anchorlens._lazy import lazy_exports
from anchorlens.errors import AnchorlensError

__version__ = "0.1.0"

#: Public name -> the module that defines it (add a line to publish a name).
_LAZY: dict[str, str] = {
    "CompressionResult": "anchorlens.compression",
    "compression": "anchorlens.compression",
    "DeepResult": "anchorlens.deep",
    "deep": "anchorlens.deep",
    "DiagnosisResult": "anchorlens.diagnosis",
    "diagnose": "anchorlens.diagnosis",
    "IsolationResult": "anchorlens.isolation",
    "isolation": "anchorlens.isolation",
    "isolate": "anchorlens.isolation",
    "Predictions": "anchorlens.metrics",
    "accuracy": "anchorlens.metrics",
    "label_loyalty": "anchorlens.metrics",
    "word_loyalty": "anchorlens.metrics",
    "fast_layout": "anchorlens.models",
    "frozen": "anchorlens.models",
    "load_model": "anchorlens.models",
    "tiny_model": "anchorlens.models",
    "tiny_tokenizer": "anchorlens.models",
    "Demonstrations": "anchorlens.prompts",
    "IclPrompt": "anchorlens.prompts",
    "PromptBatch": "anchorlens.prompts",
    "PromptSet": "anchorlens.prompts",
    "build_prompt": "anchorlens.prompts",
    "build_prompts": "anchorlens.prompts",
    "collate": "anchorlens.prompts",
    "iter_batches": "anchorlens.prompts",
    "label_token_ids": "anchorlens.prompts",
    "resample_demonstrations": "anchorlens.prompts",
    "sample_demonstrations": "anchorlens.prompts",
    "sample_test": "anchorlens.prompts",
    "ReproduceConfig": "anchorlens.report",
    "reproduce": "anchorlens.report",
    "AnchorReweighting": "anchorlens.reweighting",
    "ReweightingResult": "anchorlens.reweighting",
    "table1": "anchorlens.reweighting",
    "train_reweighting": "anchorlens.reweighting",
    "TrainConfig": "anchorlens.reweighting",
    "predict": "anchorlens.runner",
    "forward_batches": "anchorlens.runner",
    "current_batch": "anchorlens.runner",
    "target_logits": "anchorlens.runner",
    "SpanFlowResult": "anchorlens.spans",
    "discover": "anchorlens.spans",
    "isolate_span": "anchorlens.spans",
    "span_flow": "anchorlens.spans",
    "span_prompt": "anchorlens.spans",
    "SaliencyResult": "anchorlens.saliency",
    "batch_saliency": "anchorlens.saliency",
    "saliency": "anchorlens.saliency",
    "BUILTIN_TASKS": "anchorlens.tasks",
    "Example": "anchorlens.tasks",
    "Task": "anchorlens.tasks",
    "load_task": "anchorlens.tasks",
}

__all__ = sorted(["AnchorlensError", "__version__", *_LAZY])


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


class _Package(types.ModuleType):
    """Keeps a public function named like its module (``isolation``, ``deep``...) once it is bound:
    Python binds a submodule to its package's attribute when the submodule is first imported, which would
    otherwise replace the lazily imported function (the eager ``from ... import`` did the same)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == f"{__name__}.{name}":
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # what type checkers and IDEs see: the eager imports
    from anchorlens.compression import CompressionResult, compression
    from anchorlens.deep import DeepResult, deep
    from anchorlens.diagnosis import DiagnosisResult, diagnose
    from anchorlens.isolation import IsolationResult, isolate, isolation
    from anchorlens.metrics import Predictions, accuracy, label_loyalty, word_loyalty
    from anchorlens.models import fast_layout, frozen, load_model, tiny_model, tiny_tokenizer
    from anchorlens.prompts import (
        Demonstrations,
        IclPrompt,
        PromptBatch,
        PromptSet,
        build_prompt,
        build_prompts,
        collate,
        iter_batches,
        label_token_ids,
        resample_demonstrations,
        sample_demonstrations,
        sample_test,
    )
    from anchorlens.report import ReproduceConfig, reproduce
    from anchorlens.reweighting import (
        AnchorReweighting,
        ReweightingResult,
        TrainConfig,
        table1,
        train_reweighting,
    )
    from anchorlens.runner import current_batch, forward_batches, predict, target_logits
    from anchorlens.saliency import SaliencyResult, batch_saliency, saliency
    from anchorlens.spans import SpanFlowResult, discover, isolate_span, span_flow, span_prompt
    from anchorlens.tasks import BUILTIN_TASKS, Example, Task, load_task
