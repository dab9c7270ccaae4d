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

from typing import TYPE_CHECKING

from anchorlens._lazy import lazy_exports
from anchorlens.errors import AnchorlensError

__version__ = "0.1.0"

#: Public name -> the module that defines it (add a line to publish a name).
_LAZY: dict[str, str] = {
    "CompressionResult": "anchorlens.experiments.compression.compute",
    "compression": "anchorlens.experiments.compression.compute",
    "DeepResult": "anchorlens.experiments.deep.compute",
    "deep": "anchorlens.experiments.deep.compute",
    "DiagnosisResult": "anchorlens.experiments.diagnosis.compute",
    "diagnose": "anchorlens.experiments.diagnosis.compute",
    "IsolationResult": "anchorlens.experiments.isolation.compute",
    "HeadsResult": "anchorlens.experiments.heads.compute",
    "heads": "anchorlens.experiments.heads.compute",
    "isolation": "anchorlens.experiments.isolation.compute",
    "isolate": "anchorlens.experiments.isolation.compute",
    "Predictions": "anchorlens.core.metrics",
    "accuracy": "anchorlens.core.metrics",
    "label_loyalty": "anchorlens.core.metrics",
    "word_loyalty": "anchorlens.core.metrics",
    "fast_layout": "anchorlens.core.models",
    "frozen": "anchorlens.core.models",
    "load_model": "anchorlens.core.models",
    "tiny_model": "anchorlens.core.tiny",
    "tiny_tokenizer": "anchorlens.core.tiny",
    "Demonstrations": "anchorlens.core.sampling",
    "IclPrompt": "anchorlens.core.prompts",
    "PromptBatch": "anchorlens.core.batch",
    "PromptSet": "anchorlens.core.prompts",
    "build_prompt": "anchorlens.core.prompts",
    "build_prompts": "anchorlens.core.prompts",
    "collate": "anchorlens.core.batch",
    "iter_batches": "anchorlens.core.batch",
    "label_token_ids": "anchorlens.core.prompts",
    "resample_demonstrations": "anchorlens.core.sampling",
    "sample_demonstrations": "anchorlens.core.sampling",
    "sample_test": "anchorlens.core.sampling",
    "ReproduceConfig": "anchorlens.report",
    "reproduce": "anchorlens.report",
    "AnchorReweighting": "anchorlens.experiments.reweighting",
    "ReweightingResult": "anchorlens.experiments.reweighting",
    "table1": "anchorlens.experiments.reweighting",
    "train_reweighting": "anchorlens.experiments.reweighting",
    "TrainConfig": "anchorlens.experiments.reweighting",
    "RolesResult": "anchorlens.experiments.roles.compute",
    "roles": "anchorlens.experiments.roles.compute",
    "TaskVectorResult": "anchorlens.experiments.taskvec.compute",
    "taskvec": "anchorlens.experiments.taskvec.compute",
    "predict": "anchorlens.core.runner",
    "forward_batches": "anchorlens.core.runner",
    "LoopOptions": "anchorlens.core.runner",
    "PrefixCacheFallback": "anchorlens.core.prefix",
    "current_batch": "anchorlens.core.runner",
    "target_logits": "anchorlens.core.runner",
    "SpanFlowResult": "anchorlens.spans",
    "discover": "anchorlens.spans",
    "isolate_span": "anchorlens.spans",
    "span_flow": "anchorlens.spans",
    "span_prompt": "anchorlens.spans",
    "SaliencyResult": "anchorlens.experiments.saliency.compute",
    "batch_saliency": "anchorlens.experiments.saliency.compute",
    "saliency": "anchorlens.experiments.saliency.compute",
    "BUILTIN_TASKS": "anchorlens.core.tasks",
    "Example": "anchorlens.core.tasks",
    "Task": "anchorlens.core.tasks",
    "load_task": "anchorlens.core.tasks",
}

__all__ = sorted(["AnchorlensError", "__version__", *_LAZY])


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


if TYPE_CHECKING:  # what type checkers and IDEs see: the eager imports
    from anchorlens.core.batch import PromptBatch, collate, iter_batches
    from anchorlens.core.metrics import Predictions, accuracy, label_loyalty, word_loyalty
    from anchorlens.core.models import fast_layout, frozen, load_model
    from anchorlens.core.prefix import PrefixCacheFallback
    from anchorlens.core.prompts import IclPrompt, PromptSet, build_prompt, build_prompts, label_token_ids
    from anchorlens.core.runner import LoopOptions, current_batch, forward_batches, predict, target_logits
    from anchorlens.core.sampling import (
        Demonstrations,
        resample_demonstrations,
        sample_demonstrations,
        sample_test,
    )
    from anchorlens.core.tasks import BUILTIN_TASKS, Example, Task, load_task
    from anchorlens.core.tiny import tiny_model, tiny_tokenizer
    from anchorlens.experiments.compression.compute import CompressionResult, compression
    from anchorlens.experiments.deep.compute import DeepResult, deep
    from anchorlens.experiments.diagnosis.compute import DiagnosisResult, diagnose
    from anchorlens.experiments.heads.compute import HeadsResult, heads
    from anchorlens.experiments.isolation.compute import IsolationResult, isolate, isolation
    from anchorlens.experiments.reweighting import (
        AnchorReweighting,
        ReweightingResult,
        TrainConfig,
        table1,
        train_reweighting,
    )
    from anchorlens.experiments.roles.compute import RolesResult, roles
    from anchorlens.experiments.saliency.compute import SaliencyResult, batch_saliency, saliency
    from anchorlens.experiments.taskvec.compute import TaskVectorResult, taskvec
    from anchorlens.report import ReproduceConfig, reproduce
    from anchorlens.spans import SpanFlowResult, discover, isolate_span, span_flow, span_prompt
