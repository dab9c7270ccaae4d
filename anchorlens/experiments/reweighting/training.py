"""Training anchor re-weighting's ``beta`` with the model frozen (paper Appendix H).

The paper: Adam, lr 0.01, 10 epochs, batch size 1, on 4 extra train examples per class (disjoint from the
demonstrations), each wrapped as a query with the same demonstrations; the loss is the cross-entropy of
the label-restricted logits at the target against the gold label; only ``beta`` trains.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from anchorlens.core.batch import PromptBatch, ordered_batches
from anchorlens.core.models import frozen
from anchorlens.core.prefix import PrefixStore, check_policy
from anchorlens.core.prompts import IclPrompt, build_prompts
from anchorlens.core.runner import HookSpec, LoopOptions, forward_batches
from anchorlens.core.sampling import Demonstrations, sample_demonstrations
from anchorlens.core.tasks import Task
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.reweighting.module import AnchorReweighting
from anchorlens.types import Model, PaddingSide, PrefixPolicy


class NonFiniteLoss(AnchorlensError):
    """A training step's loss or gradient was NaN or infinite; ``beta`` was left unchanged."""


@dataclass(frozen=True)
class TrainConfig:
    """How ``beta`` is trained (defaults: the paper's Appendix H).

    Attributes:
        epochs: Passes over the training prompts.
        lr: Adam's learning rate.
        batch_size: Prompts per step.
        seed: Seeds the per-epoch shuffle, so runs repeat exactly.
        padding_side: Of the training batches.
    """

    epochs: int = 10
    lr: float = 0.01
    batch_size: int = 1
    seed: int = 0
    padding_side: PaddingSide = "right"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise AnchorlensError(
                f"epochs and batch_size must be >= 1 and lr > 0; got {self.epochs}, {self.batch_size}, {self.lr}."
            )


@dataclass(frozen=True)
class TrainingLog:
    """What a training run did.

    Attributes:
        losses: The loss of every completed step, measured before that step's update (the loss curve).
        epoch_losses: Mean step loss of every completed epoch.
        steps: Optimizer steps taken.
        seconds: Wall time of the training loop.
        stopped: Why training stopped early (a NaN or infinite loss or gradient), else ``None``; ``beta``
            then holds the value after the last finite step.
    """

    losses: tuple[float, ...]
    epoch_losses: tuple[float, ...]
    steps: int
    seconds: float
    stopped: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "losses": list(self.losses),
            "epoch_losses": list(self.epoch_losses),
            "steps": self.steps,
            "seconds": self.seconds,
            "stopped": self.stopped,
        }


def refuse_inference_mode() -> None:
    if torch.is_inference_mode_enabled():
        raise AnchorlensError(
            "Training beta needs gradients, which torch.inference_mode() forbids; call it outside that block "
            "(torch.no_grad() is fine: anchorlens enables grad locally)."
        )


def _loss(logits: torch.Tensor, batch: PromptBatch) -> torch.Tensor:
    labels = torch.tensor([p.label for p in batch.prompts], device=logits.device)
    if bool((labels < 0).any()):
        raise AnchorlensError("Training needs the gold label of every query; some prompts have none.")
    ids = torch.tensor(batch.prompts[0].label_token_ids, device=logits.device)
    return F.cross_entropy(logits[:, ids].float(), labels)


def _step(module: AnchorReweighting, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> float:
    """One Adam step on ``beta`` from ``loss``; returns the loss before the update.

    Raises:
        NonFiniteLoss: the loss or ``beta``'s gradient is NaN or infinite (``beta`` is not updated).
        AnchorlensError: ``beta`` got no gradient (``hook_pattern`` not in the forward path).
    """
    value = float(loss.detach())
    if not math.isfinite(value):
        raise NonFiniteLoss(f"the loss is {value}")
    (grad,) = torch.autograd.grad(loss, [module.beta], allow_unused=True)
    if grad is None:
        raise AnchorlensError(
            "beta received no gradient: blocks.*.attn.hook_pattern never ran or is not in the forward "
            "path (a hook detached it, or the model only observes it)."
        )
    if not bool(torch.isfinite(grad).all()):
        raise NonFiniteLoss(f"the loss is {value} but beta's gradient is not finite")
    optimizer.zero_grad(set_to_none=True)
    module.beta.grad = grad
    optimizer.step()
    module.beta.grad = None
    return value


def train_step(
    module: AnchorReweighting,
    model: Model,
    batch: PromptBatch,
    optimizer: torch.optim.Optimizer,
    fwd_hooks: HookSpec = None,
    store: PrefixStore | None = None,
    prefix: PrefixPolicy = "auto",
) -> float:
    """One optimizer step on one batch; returns the batch's mean loss before the update.

    The model is frozen meanwhile (its parameters never get ``.grad``); the gradient of ``beta`` comes
    from ``torch.autograd.grad``. ``fwd_hooks`` run before the re-weighting hooks. ``beta`` acts on the
    target's row only, so prompts sharing their demonstrations run the queries on the demonstrations' key/value
    cache (the policy ``prefix``, see :func:`anchorlens.predict`), kept in ``store`` across steps.

    Raises:
        NonFiniteLoss: the loss or ``beta``'s gradient is NaN or infinite (``beta`` is not updated).
        AnchorlensError: ``beta`` got no gradient (``hook_pattern`` not in the forward path).
    """
    refuse_inference_mode()
    runs = [(list(batch.indices), batch)]
    with torch.enable_grad(), frozen(model):
        ((_, _, logits),) = forward_batches(
            model,
            batch.prompts,
            fwd_hooks=fwd_hooks,
            own_hooks=module.hooks,
            options=LoopOptions(batches=runs),
            prefix=prefix,
            store=store,
        )
        return _step(module, _loss(logits, batch), optimizer)


def _epoch(
    module: AnchorReweighting,
    model: Model,
    prompts: Sequence[IclPrompt],
    order: list[int],
    optimizer: torch.optim.Optimizer,
    config: TrainConfig,
    fwd_hooks: HookSpec,
    bar: Any,
    losses: list[float],
    store: PrefixStore,
    prefix: PrefixPolicy = "auto",
) -> None:
    """One pass over ``prompts`` in ``order``, appending each step's loss to ``losses`` (raises
    NonFiniteLoss, with the finite steps before it recorded)."""
    for _, batch in ordered_batches(model, prompts, order, config.batch_size, config.padding_side):
        losses.append(train_step(module, model, batch, optimizer, fwd_hooks, store, prefix))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", refresh=False)


def fit(
    module: AnchorReweighting,
    model: Model,
    prompts: Sequence[IclPrompt],
    config: TrainConfig | None = None,
    *,
    fwd_hooks: HookSpec = None,
    progress: bool | str = False,
    prefix: PrefixPolicy = "auto",
    **settings: Any,
) -> TrainingLog:
    """Train ``module.beta`` with Adam on labelled ``prompts``, the model frozen (it never gets ``.grad``).

    ``config`` (or its fields as keywords: ``epochs=``, ``lr=``...) says how. The prompts are reshuffled
    every epoch by a generator seeded with ``config.seed``. The caller's ``fwd_hooks`` run before the
    re-weighting hooks in every step; ``prefix`` is the prefix policy (see :func:`anchorlens.predict`: the
    demonstrations run once for every step). On a NaN or infinite loss or gradient, training stops with a
    warning, ``beta`` keeps its last finite value and the log says why.

    Raises:
        AnchorlensError: under ``torch.inference_mode()``, no prompts, unlabelled prompts, or a model
            other than the one ``beta`` was made for.
    """
    from tqdm.auto import tqdm

    refuse_inference_mode()
    check_policy(prefix)
    config = config or TrainConfig(**settings)
    if len(prompts) == 0:
        raise AnchorlensError("No training prompts.")
    module.check(model)
    optimizer = torch.optim.Adam([module.beta], lr=config.lr)
    generator = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    store = PrefixStore()  # the demonstrations' cache, run once for every step
    epoch_losses: list[float] = []
    stopped: str | None = None
    n_steps = config.epochs * math.ceil(len(prompts) / config.batch_size)
    desc = progress if isinstance(progress, str) else "re-weighting"
    t0 = time.perf_counter()
    with tqdm(total=n_steps, desc=desc, disable=not progress, unit="step") as bar:
        for epoch in range(config.epochs):
            order = torch.randperm(len(prompts), generator=generator).tolist()
            start = len(losses)
            try:
                _epoch(
                    module,
                    model,
                    prompts,
                    order,
                    optimizer,
                    config,
                    fwd_hooks,
                    bar,
                    losses,
                    store,
                    prefix,
                )
            except NonFiniteLoss as e:
                stopped = f"stopped at epoch {epoch}, step {len(losses)}: {e}"
                break
            epoch_losses.append(float(np.mean(losses[start:])))
    if stopped:
        warnings.warn(
            f"Anchor re-weighting {stopped}; beta keeps its value after the last finite step "
            f"({len(losses)} steps). Check the prompts and hooks, or lower lr.",
            RuntimeWarning,
            stacklevel=2,
        )
    module.meta["training"] = {
        **asdict(config),
        "n_train": len(prompts),
        "steps": len(losses),
        "stopped": stopped,
    }
    return TrainingLog(tuple(losses), tuple(epoch_losses), len(losses), time.perf_counter() - t0, stopped)


def train_reweighting(
    model: Model,
    task: Task,
    *,
    seed: int = 42,
    shots: int = 1,
    aux_shots: int = 4,
    demonstrations: Demonstrations | None = None,
    epochs: int = 10,
    lr: float = 0.01,
    batch_size: int = 1,
    per_shot: bool = False,
    all_subtokens: bool = False,
    padding_side: PaddingSide = "right",
    fwd_hooks: HookSpec = None,
    progress: bool | str = False,
    prefix: PrefixPolicy = "auto",
) -> tuple[AnchorReweighting, TrainingLog]:
    """Train ``beta`` as the paper does: ``shots`` demonstrations per class and ``aux_shots`` disjoint
    train examples per class (``sample_demonstrations(task, shots, seed, aux_shots)``), each auxiliary
    example wrapped as a query with the same demonstrations.

    Args:
        demonstrations: Use these (their ``aux`` is the train set) instead of sampling.
        per_shot: One ``beta`` per demonstration instead of one per class.
        all_subtokens: Scale every sub-token of multi-token label words.
        fwd_hooks: The caller's hooks, active in every training step (before the re-weighting hooks).
        prefix: The prefix policy: run the demonstrations once for all steps (see :func:`anchorlens.predict`).

    Raises:
        AnchorlensError: too few train examples of a class, demonstrations lacking a class, no auxiliary
            examples.
    """
    refuse_inference_mode()
    demos = demonstrations
    if demos is None:
        demos = sample_demonstrations(task, shots=shots, seed=seed, aux_shots=aux_shots)
    if not demos.aux:
        raise AnchorlensError(
            "No auxiliary train examples: pass aux_shots >= 1, or demonstrations with a non-empty aux."
        )
    module = AnchorReweighting.for_model(model, task, demos, per_shot=per_shot, all_subtokens=all_subtokens)
    train = build_prompts(
        model, task, list(demos.aux), demonstrations=Demonstrations(demos.demos, (), demos.seed)
    )
    config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, padding_side=padding_side)
    log = fit(module, model, train, config, fwd_hooks=fwd_hooks, progress=progress, prefix=prefix)
    return module, log
