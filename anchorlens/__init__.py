"""anchorlens: "Label Words are Anchors" (Wang et al., EMNLP 2023) for TransformerLens.

Quick start::

    import anchorlens as al
    model = al.load_model("smollm2-135m")          # offline; or any TransformerLens name
    task = al.load_task("sst2")
    prompts = al.build_prompts(model, task, n=100, shots=1, seed=42)
    pred = al.predict(model, prompts)
    pred.accuracy
"""

from anchorlens.compression import CompressionResult, compression
from anchorlens.deep import DeepResult, deep
from anchorlens.diagnosis import DiagnosisResult, diagnose
from anchorlens.errors import AnchorlensError
from anchorlens.isolation import IsolationResult, isolation
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
from anchorlens.reweighting import AnchorReweighting, ReweightingResult, table1, train_reweighting
from anchorlens.runner import predict, target_logits
from anchorlens.saliency import SaliencyResult, batch_saliency, saliency
from anchorlens.tasks import BUILTIN_TASKS, Example, Task, load_task

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_TASKS",
    "AnchorReweighting",
    "AnchorlensError",
    "CompressionResult",
    "DeepResult",
    "Demonstrations",
    "DiagnosisResult",
    "Example",
    "IclPrompt",
    "IsolationResult",
    "Predictions",
    "PromptBatch",
    "PromptSet",
    "ReproduceConfig",
    "ReweightingResult",
    "SaliencyResult",
    "Task",
    "__version__",
    "accuracy",
    "batch_saliency",
    "build_prompt",
    "build_prompts",
    "collate",
    "compression",
    "deep",
    "diagnose",
    "fast_layout",
    "frozen",
    "isolation",
    "iter_batches",
    "label_loyalty",
    "label_token_ids",
    "load_model",
    "load_task",
    "predict",
    "reproduce",
    "resample_demonstrations",
    "saliency",
    "sample_demonstrations",
    "sample_test",
    "table1",
    "target_logits",
    "tiny_model",
    "tiny_tokenizer",
    "train_reweighting",
    "word_loyalty",
]
