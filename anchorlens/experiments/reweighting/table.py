"""Table 1 of the paper (section 3.1): vanilla 1-shot, vanilla many-shot and re-weighted 1-shot ICL on the
same test queries (many-shot: 5 per class, 3 for AG News)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from anchorlens.core.metrics import Predictions
from anchorlens.core.prefix import check_policy
from anchorlens.core.prompts import build_prompts
from anchorlens.core.runner import HookSpec, predict
from anchorlens.core.sampling import Demonstrations, sample_demonstrations, sample_test
from anchorlens.core.tasks import Task
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.reweighting.module import AnchorReweighting, check_classes
from anchorlens.experiments.reweighting.training import TrainingLog, refuse_inference_mode, train_reweighting
from anchorlens.types import Model, PaddingSide, PrefixPolicy


@dataclass(frozen=True)
class ReweightingResult:
    """Table 1 for one model, task and seed: accuracies on the same test queries.

    Attributes:
        vanilla_1shot: Vanilla ICL with the 1-shot-per-class demonstrations.
        vanilla_many_shot: Vanilla ICL with ``many_shots`` per class (the 1-shot demonstrations plus the
            first auxiliary examples, in a seeded shuffle); 5 by default, 3 for AG News.
        reweighting: The 1-shot prompts with the trained ``beta``.
        train_seconds: Wall time of training.
        beta_shape: ``[layer, head, class]`` (or ``[layer, head, demo]`` per shot).
        losses: Training loss per step (the loss curve); ``epoch_losses``: per epoch.
        stopped: Why training stopped early, if it did.
        module: The trained re-weighting (not in the JSON; save it with ``module.save(path)``).
    """

    task: str
    model: str
    seed: int
    n: int
    n_train: int
    many_shots: int
    vanilla_1shot: float
    vanilla_many_shot: float
    reweighting: float
    train_seconds: float
    beta_shape: tuple[int, ...]
    losses: tuple[float, ...]
    epoch_losses: tuple[float, ...]
    stopped: str | None = None
    predictions: dict[str, Predictions] = field(default_factory=dict, repr=False, compare=False)
    module: AnchorReweighting | None = field(default=None, repr=False, compare=False)

    @property
    def gain(self) -> float:
        """Re-weighted minus vanilla 1-shot accuracy (the paper: +16.7 points on average, GPT2-XL)."""
        return self.reweighting - self.vanilla_1shot

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ReweightingResult:
        """The result :meth:`to_json` wrote (without the module)."""
        names = (
            "task",
            "model",
            "seed",
            "n",
            "n_train",
            "many_shots",
            "vanilla_1shot",
            "vanilla_many_shot",
            "reweighting",
            "train_seconds",
            "stopped",
        )
        return cls(
            **{k: d[k] for k in names},
            beta_shape=tuple(d["beta_shape"]),
            losses=tuple(d["loss_curve"]),
            epoch_losses=tuple(d["epoch_losses"]),
            predictions={k: Predictions.from_json(v) for k, v in d.get("predictions", {}).items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model,
            "seed": self.seed,
            "n": self.n,
            "n_train": self.n_train,
            "many_shots": self.many_shots,
            "vanilla_1shot": self.vanilla_1shot,
            "vanilla_many_shot": self.vanilla_many_shot,
            "reweighting": self.reweighting,
            "gain": self.gain,
            "train_seconds": self.train_seconds,
            "beta_shape": list(self.beta_shape),
            "loss_curve": list(self.losses),
            "epoch_losses": list(self.epoch_losses),
            "stopped": self.stopped,
            "predictions": {k: p.to_json() for k, p in self.predictions.items()},
        }


def many_shot_demonstrations(task: Task, many_shots: int, seed: int) -> Demonstrations:
    """The vanilla many-shot row's demonstrations: ``many_shots`` per class, in a seeded shuffle."""
    many = sample_demonstrations(task, shots=many_shots, seed=seed)
    perm = np.random.default_rng(seed).permutation(len(many.demos))
    return Demonstrations(tuple(many.demos[int(i)] for i in perm), (), seed)


def table1(
    model: Model,
    task: Task,
    *,
    n: int | None = None,
    seed: int = 42,
    many_shots: int | None = None,
    aux_shots: int = 4,
    epochs: int = 10,
    lr: float = 0.01,
    batch_size: int = 1,
    eval_batch_size: int = 8,
    per_shot: bool = False,
    all_subtokens: bool = False,
    padding_side: PaddingSide = "right",
    on_overflow: Literal["error", "drop"] = "error",
    fwd_hooks: HookSpec = None,
    progress: bool | str = False,
    prefix: PrefixPolicy = "auto",
) -> ReweightingResult:
    """The paper's Table 1 for one seed: vanilla 1-shot, vanilla many-shot and re-weighted 1-shot ICL.

    Args:
        model: A ``HookedTransformer``.
        task: From :func:`anchorlens.load_task`.
        n: Test queries (``sample_test(task, n, seed)``; default all), the same for the three rows.
        seed: Seeds the demonstrations, the auxiliary train set, the test sample and training.
        many_shots: Shots per class of the vanilla many-shot row (default 5, 3 for ``agnews``).
        aux_shots: Auxiliary train examples per class (the paper: 4).
        epochs: Training epochs (the paper: 10).
        lr: Adam's learning rate (the paper: 0.01).
        batch_size: Training batch size (the paper: 1).
        eval_batch_size: Prompts per evaluation forward pass.
        per_shot: See :class:`AnchorReweighting`.
        all_subtokens: See :class:`AnchorReweighting`.
        padding_side: Of training and evaluation batches.
        on_overflow: Prompts longer than the context: ``"error"`` or ``"drop"`` (then the rows may be
            measured on different queries; ``n`` counts the 1-shot ones).
        fwd_hooks: The caller's hooks, active in the three evaluations and in training (before the
            re-weighting hooks).
        progress: Show progress bars.
        prefix: The prefix policy (see :func:`anchorlens.predict`): run each demonstration set once and the
            queries on its key/value cache, in training and evaluation.
    """
    refuse_inference_mode()
    check_policy(prefix)
    if many_shots is None:
        many_shots = 3 if task.name == "agnews" else 5
    if many_shots < 2:
        raise AnchorlensError(f"many_shots must be >= 2 (the vanilla many-shot row), got {many_shots}.")
    demos = sample_demonstrations(task, shots=1, seed=seed, aux_shots=aux_shots)
    check_classes(task, demos.demos)
    one_shot = Demonstrations(demos.demos, (), seed)
    many_demos = many_shot_demonstrations(task, many_shots, seed)
    queries = sample_test(task, n, seed)
    test_1 = build_prompts(model, task, queries, demonstrations=one_shot, on_overflow=on_overflow)
    test_many = build_prompts(model, task, queries, demonstrations=many_demos, on_overflow=on_overflow)

    def bar(name: str) -> bool | str:
        return f"{name} ({task.name})" if progress else False

    kw: dict[str, Any] = dict(batch_size=eval_batch_size, padding_side=padding_side, fwd_hooks=fwd_hooks)
    kw.update(prefix=prefix)
    vanilla = predict(model, test_1, progress=bar("vanilla 1-shot"), **kw)
    vanilla_many = predict(model, test_many, progress=bar(f"vanilla {many_shots}-shot"), **kw)
    module, log = train_reweighting(
        model,
        task,
        seed=seed,
        demonstrations=demos,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        per_shot=per_shot,
        all_subtokens=all_subtokens,
        padding_side=padding_side,
        fwd_hooks=fwd_hooks,
        progress=bar("training"),
        prefix=prefix,
    )
    reweighted = module.predict(model, test_1, progress=bar("re-weighted"), **kw)
    preds = {"vanilla_1shot": vanilla, "vanilla_many_shot": vanilla_many, "reweighting": reweighted}
    return _result(model, task, seed, len(demos.aux), many_shots, preds, module, log)


def _result(
    model: Model,
    task: Task,
    seed: int,
    n_train: int,
    many_shots: int,
    preds: dict[str, Predictions],
    module: AnchorReweighting,
    log: TrainingLog,
) -> ReweightingResult:
    return ReweightingResult(
        task=task.name,
        model=str(getattr(model.cfg, "model_name", "")),
        seed=seed,
        n=len(preds["vanilla_1shot"]),
        n_train=n_train,
        many_shots=many_shots,
        vanilla_1shot=preds["vanilla_1shot"].accuracy,
        vanilla_many_shot=preds["vanilla_many_shot"].accuracy,
        reweighting=preds["reweighting"].accuracy,
        train_seconds=log.seconds,
        beta_shape=tuple(int(x) for x in module.beta.shape),
        losses=log.losses,
        epoch_losses=log.epoch_losses,
        stopped=log.stopped,
        predictions=preds,
        module=module,
    )
