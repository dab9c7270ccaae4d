"""Anchor re-weighting (paper section 3.1, Appendices G and H, Table 1).

The target's attention to each demonstration's label word is rescaled by a learnable ``exp(beta)`` in
every layer and head, after the softmax and without renormalization (paper Eq. 12)::

    A'_{l,h}(q, p_i) = exp(beta_{l,h,c(i)}) * A_{l,h}(q, p_i)

Only the target row ``q`` and the label-word columns ``p_i`` change. ``beta`` is ``[n_layers, n_heads,
n_classes]`` (one value per class, shared by all of that class's demonstrations) or, with
``per_shot=True``, ``[n_layers, n_heads, n_demos]`` (one per demonstration, in prompt order). It starts
at 0, which is exactly vanilla ICL. Training (paper App. H): Adam, lr 0.01, 10 epochs, batch size 1, on 4
extra examples per class (disjoint from the demonstrations), each wrapped as a query with the same
demonstrations; the loss is the cross-entropy of the label-restricted logits at the target against the
gold label; only ``beta`` trains, the model stays frozen.

Beyond the original (1 shot per class, batch size 1, GPT-2 only): any number of shots, padded batches
(left or right), any ``HookedTransformer`` (``hook_pattern`` is per query head under grouped-query
attention, so ``n_heads`` is ``cfg.n_heads``), and multi-token label words (the first sub-token is scaled,
as in the paper; ``all_subtokens=True`` scales every sub-token by its class's factor).

Table 1 (:func:`table1`) compares vanilla 1-shot ICL, vanilla 5-shot ICL (3-shot for AG News) and
re-weighted 1-shot ICL on the same test queries.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float, Int
from torch import Tensor, nn
from tqdm.auto import tqdm

from anchorlens._typing import Pattern
from anchorlens.errors import AnchorlensError
from anchorlens.hooks import FwdHook, HookFn, pattern_name
from anchorlens.metrics import Predictions
from anchorlens.models import frozen
from anchorlens.prompts import (
    Demonstrations,
    IclPrompt,
    PaddingSide,
    PromptBatch,
    build_prompts,
    iter_batches,
    label_token_ids,
    sample_demonstrations,
    sample_test,
)
from anchorlens.runner import FwdHooks, predict, target_logits
from anchorlens.tasks import Example, Task

Shots = Literal["class", "demo"]
Beta = Float[Tensor, "layer head slot"]
Entries = Int[Tensor, " entry"]

FILE_FORMAT = "anchorlens.reweighting/1"
# Metadata compared on load: (key, what it describes). Others (training settings) are informational.
_MODEL_KEYS = ("model_name", "n_layers", "n_heads", "d_model", "d_vocab")
_TASK_KEYS = ("task", "label_words")


class NonFiniteLoss(AnchorlensError):
    """A training step's loss or gradient was NaN or infinite; ``beta`` was left unchanged."""


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


def demonstrations_fingerprint(demos: Sequence[Example]) -> str:
    """A short hash of the demonstrations (texts and labels, in prompt order), stored with ``beta``."""
    blob = json.dumps([[e.text, e.label] for e in demos], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _model_meta(model: Any) -> dict[str, Any]:
    cfg = model.cfg
    return {
        "model_name": str(getattr(cfg, "model_name", "")),
        "n_layers": int(cfg.n_layers),
        "n_heads": int(cfg.n_heads),
        "d_model": int(cfg.d_model),
        "d_vocab": int(cfg.d_vocab),
    }


def _demo_examples(demonstrations: Demonstrations | Sequence[Example]) -> tuple[Example, ...]:
    return demonstrations.demos if isinstance(demonstrations, Demonstrations) else tuple(demonstrations)


def check_classes(task: Task, demos: Sequence[Example]) -> None:
    """Refuse demonstrations that lack a class: that class's label word, the anchor ``beta`` scales, would
    not be in the prompt.

    Raises:
        AnchorlensError: naming the missing classes.
    """
    present = {e.label for e in demos}
    missing = [task.label_names[c] for c in range(task.n_classes) if c not in present]
    if missing:
        raise AnchorlensError(
            f"The demonstrations of task {task.name!r} lack class(es) {', '.join(missing)}: anchor "
            "re-weighting scales the target's attention to every class's label word, so each class needs "
            "at least one demonstration. Sample them with sample_demonstrations(task, shots, seed), which "
            "takes the same number from every class."
        )


def _refuse_inference_mode() -> None:
    if torch.is_inference_mode_enabled():
        raise AnchorlensError(
            "Training beta needs gradients, which torch.inference_mode() forbids; call it outside that block "
            "(torch.no_grad() is fine: anchorlens enables grad locally)."
        )


class AnchorReweighting(nn.Module):
    """Learnable ``exp(beta)`` on the target -> label-word attention, in every layer and head.

    Args:
        n_layers: The model's layers (``cfg.n_layers``).
        n_heads: The model's query heads (``cfg.n_heads``; also under grouped-query attention).
        n_classes: The task's classes: ``beta`` is ``[n_layers, n_heads, n_classes]``, shared by every
            demonstration of a class.
        per_shot: One ``beta`` per demonstration instead (``[n_layers, n_heads, n_demos]``, prompt order).
        n_demos: Demonstrations per prompt; required with ``per_shot``.
        all_subtokens: Scale every sub-token of a multi-token label word (default: the first, as the paper).
        meta: What ``beta`` was made for (model, task, demonstrations); checked by :meth:`check` and
            :meth:`load`. :meth:`for_model` fills it.

    Attributes:
        beta: ``[layer, head, slot]`` parameter, zero-initialized (exactly vanilla ICL).

    Example::

        module, log = al.train_reweighting(model, task, seed=42)  # or AnchorReweighting.for_model + fit
        pred = module.predict(model, prompts)                    # al.predict with the hooks applied
        batch = next(al.iter_batches(model, prompts, 8))
        with model.hooks(fwd_hooks=module.hooks(batch)):         # positions are this batch's
            logits = model(batch.tokens, attention_mask=batch.attention_mask)
    """

    def __init__(
        self,
        n_layers: int,
        n_heads: int,
        n_classes: int,
        *,
        per_shot: bool = False,
        n_demos: int | None = None,
        all_subtokens: bool = False,
        meta: Mapping[str, Any] | None = None,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__()
        if per_shot and n_demos is None:
            raise AnchorlensError("per_shot=True needs n_demos (the number of demonstrations per prompt).")
        n_slots = int(n_demos) if per_shot and n_demos is not None else int(n_classes)
        if min(n_layers, n_heads, n_classes, n_slots) < 1:
            raise AnchorlensError(
                f"n_layers, n_heads, n_classes and n_demos must be >= 1; got {n_layers}, {n_heads}, "
                f"{n_classes}, {n_demos}."
            )
        self.beta = nn.Parameter(torch.zeros(n_layers, n_heads, n_slots, device=device))
        self.per_shot = per_shot
        self.all_subtokens = all_subtokens
        self.n_classes = int(n_classes)
        self.meta: dict[str, Any] = {
            **dict(meta or {}),
            "n_layers": int(n_layers),
            "n_heads": int(n_heads),
            "n_classes": int(n_classes),
            "shots": "demo" if per_shot else "class",
            "n_slots": n_slots,
            "all_subtokens": bool(all_subtokens),
        }

    @classmethod
    def for_model(
        cls,
        model: Any,
        task: Task,
        demonstrations: Demonstrations | Sequence[Example],
        *,
        per_shot: bool = False,
        all_subtokens: bool = False,
    ) -> AnchorReweighting:
        """A zero ``beta`` sized for ``model`` and ``task``, recording what :meth:`load` will check.

        Raises:
            AnchorlensError: the demonstrations lack a class.
        """
        demos = _demo_examples(demonstrations)
        check_classes(task, demos)
        meta = {
            **_model_meta(model),
            "task": task.name,
            "label_words": list(task.label_words),
            "label_token_ids": list(label_token_ids(task, model)),
            "demo_labels": [e.label for e in demos],
            "demonstrations": demonstrations_fingerprint(demos),
        }
        return cls(
            int(model.cfg.n_layers),
            int(model.cfg.n_heads),
            task.n_classes,
            per_shot=per_shot,
            n_demos=len(demos),
            all_subtokens=all_subtokens,
            meta=meta,
            device=getattr(model.cfg, "device", None),
        )

    @property
    def shots(self) -> Shots:
        """``"class"`` (one ``beta`` per class) or ``"demo"`` (one per demonstration)."""
        return "demo" if self.per_shot else "class"

    def extra_repr(self) -> str:
        return f"beta={tuple(self.beta.shape)}, shots={self.shots!r}, all_subtokens={self.all_subtokens}"

    # ----------------------------------------------------------------------------------------------
    # Hooks

    def _check_batch(self, batch: PromptBatch) -> None:
        ids = self.meta.get("label_token_ids")
        if ids is not None and list(batch.prompts[0].label_token_ids) != list(ids):
            raise AnchorlensError(
                f"This beta was made for task {self.meta.get('task')!r} (label token ids {list(ids)}), but "
                f"the prompts' label token ids are {list(batch.prompts[0].label_token_ids)}; use a beta "
                "trained for this task and model."
            )
        n_slots = int(self.beta.shape[-1])
        for i, p in enumerate(batch.prompts):
            if self.per_shot:
                if len(p.demo_labels) != n_slots:
                    raise AnchorlensError(
                        f"Per-shot beta has {n_slots} demonstration slots but prompt {i} of the batch has "
                        f"{len(p.demo_labels)} demonstrations; use the demonstrations it was trained with."
                    )
                want = self.meta.get("demo_labels")
                if want is not None and list(p.demo_labels) != list(want):
                    raise AnchorlensError(
                        f"Per-shot beta was trained on demonstrations with labels {list(want)} (prompt "
                        f"order), but prompt {i} has {list(p.demo_labels)}; use the same demonstrations."
                    )
            else:
                if any(not 0 <= c < n_slots for c in p.demo_labels):
                    raise AnchorlensError(
                        f"Prompt {i} has a demonstration of class {max(p.demo_labels)}, but beta has "
                        f"{n_slots} classes; use a beta trained for this task."
                    )
                missing = sorted(set(range(n_slots)) - set(p.demo_labels))
                if missing:
                    raise AnchorlensError(
                        f"Prompt {i}'s demonstrations lack class(es) {missing}: anchor re-weighting needs "
                        "every class's label word in the prompt."
                    )

    def entries(self, batch: PromptBatch) -> tuple[Entries, Entries, Entries, Entries]:
        """The attention entries to scale: ``(row, query, key, slot)``, one per label-word (sub-)token.

        ``query`` is the row's target position and ``key`` a label-word position, both in padded
        coordinates; ``slot`` indexes ``beta``'s last axis (the class, or the demonstration with
        ``per_shot``).

        Raises:
            AnchorlensError: the batch does not fit this ``beta`` (other label words, a missing class,
                another number of demonstrations).
        """
        self._check_batch(batch)
        device = batch.tokens.device
        if not self.all_subtokens:
            b, d = batch.label_positions.shape
            rows = torch.arange(b, device=device)[:, None].expand(b, d).reshape(-1)
            keys = batch.label_positions.reshape(-1)
            slots = torch.arange(d, device=device).expand(b, d) if self.per_shot else batch.demo_labels
            slots = slots.reshape(-1)
        else:
            r: list[int] = []
            k: list[int] = []
            s: list[int] = []
            for i, p in enumerate(batch.prompts):
                off = int(batch.offset[i])
                for d, (lab, span) in enumerate(zip(p.demo_labels, p.label_spans, strict=True)):
                    for t in span:
                        r.append(i)
                        k.append(t + off)
                        s.append(d if self.per_shot else lab)
            rows, keys, slots = (torch.tensor(x, dtype=torch.long, device=device) for x in (r, k, s))
        return rows, batch.target[rows], keys, slots

    def hooks(self, batch: PromptBatch) -> list[FwdHook]:
        """``(hook_name, fn)`` pairs on every ``blocks.{l}.attn.hook_pattern`` for this batch, usable in
        ``model.hooks(fwd_hooks=...)``, ``run_with_hooks`` or :func:`anchorlens.target_logits`.

        Each function returns a copy of the pattern whose entries ``[row, :, target, label word]`` are
        multiplied by ``exp(beta[layer, :, slot])`` (no renormalization); gradients reach ``beta``.
        Positions are per row, so the hooks are only valid for this ``batch``.
        """
        rows, query, keys, slots = self.entries(batch)
        return [
            (pattern_name(layer), self._hook(layer, rows, query, keys, slots))
            for layer in range(self.n_layers)
        ]

    @property
    def n_layers(self) -> int:
        return int(self.beta.shape[0])

    def _hook(self, layer: int, rows: Entries, query: Entries, keys: Entries, slots: Entries) -> HookFn:
        n_heads = int(self.beta.shape[1])

        def hook(pattern: Pattern, hook: Any) -> Pattern:
            if pattern.shape[1] != n_heads:
                raise AnchorlensError(
                    f"beta has {n_heads} heads per layer but {pattern_name(layer)} has {pattern.shape[1]}; "
                    "this beta belongs to another model."
                )
            dev = pattern.device
            r, q, k = rows.to(dev), query.to(dev), keys.to(dev)
            factor = self.beta[layer].to(dev).exp().to(pattern.dtype)[:, slots.to(dev)].T  # [entry, head]
            out = pattern.clone()
            out[r, :, q, k] = pattern[r, :, q, k] * factor
            return out

        return hook

    # ----------------------------------------------------------------------------------------------
    # Compatibility, saving and loading

    def check(
        self,
        model: Any = None,
        task: Task | None = None,
        demonstrations: Demonstrations | Sequence[Example] | None = None,
        *,
        source: str = "This beta",
    ) -> None:
        """Refuse a model, task or demonstrations other than the ones ``beta`` was made for.

        Raises:
            AnchorlensError: listing every difference (``file ...`` vs ``given ...``).
        """
        diffs: list[str] = []

        def compare(key: str, given: Any) -> None:
            want = self.meta.get(key)
            if want is not None and want != given:
                diffs.append(f"{key}: {want!r} there, {given!r} here")

        if model is not None:
            for key, value in _model_meta(model).items():
                compare(key, value)
        if task is not None:
            compare("task", task.name)
            compare("label_words", list(task.label_words))
            compare("n_classes", task.n_classes)
        if demonstrations is not None:
            demos = _demo_examples(demonstrations)
            if self.per_shot:
                compare("demo_labels", [e.label for e in demos])
            compare("demonstrations", demonstrations_fingerprint(demos))
        if diffs:
            raise AnchorlensError(
                f"{source} was made for another {'model' if model is not None else 'setup'}: "
                + "; ".join(diffs)
                + ". Train a beta for this model, task and demonstrations (anchorlens.train_reweighting)."
            )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``beta`` and its metadata (model, task, label words, shots mode, demonstrations) to
        ``path`` (a ``torch.save`` file readable with ``weights_only=True``); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"format": FILE_FORMAT, "beta": self.beta.detach().cpu(), "meta": dict(self.meta)}, path)
        return path

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        model: Any = None,
        task: Task | None = None,
        demonstrations: Demonstrations | Sequence[Example] | None = None,
    ) -> AnchorReweighting:
        """Read a file written by :meth:`save`, refusing one made for another model, task or
        demonstrations (each checked when given). ``beta`` goes to the model's device.

        Raises:
            AnchorlensError: missing or unreadable file, or a mismatch (the message says what differs).
        """
        path = Path(path)
        if not path.is_file():
            raise AnchorlensError(f"No re-weighting file at {str(path)!r}.")
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise AnchorlensError(
                f"{str(path)!r} is not a re-weighting file ({type(e).__name__}: {e})."
            ) from e
        if not isinstance(blob, dict) or blob.get("format") != FILE_FORMAT:
            raise AnchorlensError(
                f"{str(path)!r} is not a re-weighting file written by AnchorReweighting.save "
                f"(expected format {FILE_FORMAT!r})."
            )
        beta, meta = blob["beta"], dict(blob["meta"])
        if list(beta.shape) != [meta["n_layers"], meta["n_heads"], meta["n_slots"]]:
            raise AnchorlensError(
                f"{str(path)!r} is corrupt: beta {list(beta.shape)} disagrees with its metadata."
            )
        module = cls(
            meta["n_layers"],
            meta["n_heads"],
            meta["n_classes"],
            per_shot=meta["shots"] == "demo",
            n_demos=meta["n_slots"],
            all_subtokens=bool(meta["all_subtokens"]),
            meta=meta,
        )
        module.check(model, task, demonstrations, source=f"The re-weighting file {str(path)!r}")
        with torch.no_grad():
            module.beta.copy_(beta)
        if model is not None:
            module.to(getattr(model.cfg, "device", None) or "cpu")
        return module

    # ----------------------------------------------------------------------------------------------
    # Training and prediction

    def train_step(
        self,
        model: Any,
        batch: PromptBatch,
        optimizer: torch.optim.Optimizer,
        fwd_hooks: FwdHooks = (),
    ) -> float:
        """One optimizer step on one batch; returns the batch's mean loss before the update.

        The model is frozen meanwhile (its parameters never get ``.grad``); the gradient of ``beta`` comes
        from ``torch.autograd.grad``. ``fwd_hooks`` run before the re-weighting hooks.

        Raises:
            NonFiniteLoss: the loss or ``beta``'s gradient is NaN or infinite (``beta`` is not updated).
            AnchorlensError: ``beta`` got no gradient (``hook_pattern`` not in the forward path).
        """
        _refuse_inference_mode()
        labels = torch.tensor([p.label for p in batch.prompts], device=batch.tokens.device)
        if bool((labels < 0).any()):
            raise AnchorlensError("Training needs the gold label of every query; some prompts have none.")
        ids = torch.tensor(batch.prompts[0].label_token_ids, device=batch.tokens.device)
        with torch.enable_grad(), frozen(model):
            logits = target_logits(model, batch, [*fwd_hooks, *self.hooks(batch)])
            loss = F.cross_entropy(logits[:, ids].float(), labels)
            value = float(loss.detach())
            if not math.isfinite(value):
                raise NonFiniteLoss(f"the loss is {value}")
            (grad,) = torch.autograd.grad(loss, [self.beta], allow_unused=True)
        if grad is None:
            raise AnchorlensError(
                "beta received no gradient: blocks.*.attn.hook_pattern never ran or is not in the forward "
                "path (a hook detached it, or the model only observes it)."
            )
        if not bool(torch.isfinite(grad).all()):
            raise NonFiniteLoss(f"the loss is {value} but beta's gradient is not finite")
        optimizer.zero_grad(set_to_none=True)
        self.beta.grad = grad
        optimizer.step()
        self.beta.grad = None
        return value

    def fit(
        self,
        model: Any,
        prompts: Sequence[IclPrompt],
        *,
        epochs: int = 10,
        lr: float = 0.01,
        batch_size: int = 1,
        seed: int = 0,
        padding_side: PaddingSide = "right",
        fwd_hooks: FwdHooks = (),
        progress: bool | str = False,
    ) -> TrainingLog:
        """Train ``beta`` with Adam on labelled ``prompts`` (the paper: lr 0.01, 10 epochs, batch 1).

        The prompts are reshuffled every epoch by a generator seeded with ``seed``, so runs repeat
        exactly. Grad is enabled inside even if the caller disabled it. On a NaN or infinite loss or
        gradient, training stops with a warning, ``beta`` keeps its last finite value and the log says why.

        Raises:
            AnchorlensError: under ``torch.inference_mode()``, no prompts, unlabelled prompts, or a model
                other than the one ``beta`` was made for.
        """
        _refuse_inference_mode()
        if len(prompts) == 0:
            raise AnchorlensError("No training prompts.")
        if epochs < 1 or batch_size < 1 or not lr > 0:
            raise AnchorlensError(
                f"epochs and batch_size must be >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}."
            )
        self.check(model)
        optimizer = torch.optim.Adam([self.beta], lr=lr)
        generator = torch.Generator().manual_seed(seed)
        n_batches = math.ceil(len(prompts) / batch_size)
        losses: list[float] = []
        epoch_losses: list[float] = []
        stopped: str | None = None
        bar = tqdm(
            total=epochs * n_batches,
            desc=progress if isinstance(progress, str) else "re-weighting",
            disable=not progress,
            unit="step",
        )
        t0 = time.perf_counter()
        with bar:
            for epoch in range(epochs):
                order = torch.randperm(len(prompts), generator=generator).tolist()
                shuffled = [prompts[i] for i in order]
                epoch_loss: list[float] = []
                for batch in iter_batches(model, shuffled, batch_size, padding_side):
                    try:
                        loss = self.train_step(model, batch, optimizer, fwd_hooks)
                    except NonFiniteLoss as e:
                        stopped = f"stopped at epoch {epoch}, step {len(losses)}: {e}"
                        break
                    losses.append(loss)
                    epoch_loss.append(loss)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if stopped:
                    break
                epoch_losses.append(float(np.mean(epoch_loss)))
        seconds = time.perf_counter() - t0
        if stopped:
            warnings.warn(
                f"Anchor re-weighting {stopped}; beta keeps its value after the last finite step "
                f"({len(losses)} steps). Check the prompts and hooks, or lower lr.",
                RuntimeWarning,
                stacklevel=2,
            )
        self.meta["training"] = {
            "epochs": epochs,
            "lr": lr,
            "batch_size": batch_size,
            "seed": seed,
            "n_train": len(prompts),
            "steps": len(losses),
            "stopped": stopped,
        }
        return TrainingLog(tuple(losses), tuple(epoch_losses), len(losses), seconds, stopped)

    def predict(
        self,
        model: Any,
        prompts: Sequence[IclPrompt],
        *,
        batch_size: int = 8,
        fwd_hooks: FwdHooks = (),
        top_k: int = 5,
        padding_side: PaddingSide = "right",
        progress: bool | str = False,
    ) -> Predictions:
        """:func:`anchorlens.predict` with this re-weighting applied (its hooks follow ``fwd_hooks``)."""
        self.check(model)
        return predict(
            model,
            prompts,
            batch_size=batch_size,
            fwd_hooks=lambda batch: [*fwd_hooks, *self.hooks(batch)],
            top_k=top_k,
            padding_side=padding_side,
            progress=progress,
        )


def reweighting_hooks(module: AnchorReweighting, batch: PromptBatch) -> list[FwdHook]:
    """The hook-factory form of :meth:`AnchorReweighting.hooks`."""
    return module.hooks(batch)


def train_reweighting(
    model: Any,
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
    progress: bool | str = False,
) -> tuple[AnchorReweighting, TrainingLog]:
    """Train ``beta`` as the paper does: ``shots`` demonstrations per class and ``aux_shots`` disjoint
    train examples per class (``sample_demonstrations(task, shots, seed, aux_shots)``), each auxiliary
    example wrapped as a query with the same demonstrations.

    Args:
        demonstrations: Use these (their ``aux`` is the train set) instead of sampling.
        per_shot: One ``beta`` per demonstration instead of one per class.
        all_subtokens: Scale every sub-token of multi-token label words.

    Raises:
        AnchorlensError: too few train examples of a class, demonstrations lacking a class, no auxiliary
            examples.
    """
    _refuse_inference_mode()
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
    log = module.fit(
        model,
        train,
        epochs=epochs,
        lr=lr,
        batch_size=batch_size,
        seed=seed,
        padding_side=padding_side,
        progress=progress,
    )
    return module, log


@dataclass(frozen=True)
class ReweightingResult:
    """Table 1 for one model, task and seed: accuracies on the same test queries.

    Attributes:
        vanilla_1shot: Vanilla ICL with the 1-shot-per-class demonstrations.
        vanilla_5shot: Vanilla ICL with ``many_shots`` per class (the 1-shot demonstrations plus the
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
    vanilla_5shot: float
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

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": self.model,
            "seed": self.seed,
            "n": self.n,
            "n_train": self.n_train,
            "many_shots": self.many_shots,
            "vanilla_1shot": self.vanilla_1shot,
            "vanilla_5shot": self.vanilla_5shot,
            "reweighting": self.reweighting,
            "gain": self.gain,
            "train_seconds": self.train_seconds,
            "beta_shape": list(self.beta_shape),
            "loss_curve": list(self.losses),
            "epoch_losses": list(self.epoch_losses),
            "stopped": self.stopped,
        }


def table1(
    model: Any,
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
    progress: bool | str = False,
) -> ReweightingResult:
    """The paper's Table 1 for one seed: vanilla 1-shot, vanilla many-shot and re-weighted 1-shot ICL.

    Args:
        model: A ``HookedTransformer``.
        task: From :func:`anchorlens.load_task`.
        n: Test queries (``sample_test(task, n, seed)``; default all), the same for the three rows.
        seed: Seeds the demonstrations, the auxiliary train set, the test sample and training.
        many_shots: Shots per class of the vanilla many-shot row (default 5, 3 for ``agnews``).
        aux_shots: Auxiliary train examples per class (the paper: 4).
        epochs, lr, batch_size: Training (the paper: 10, 0.01, 1).
        eval_batch_size: Prompts per evaluation forward pass.
        per_shot, all_subtokens: See :class:`AnchorReweighting`.
        padding_side: Of training and evaluation batches.
        on_overflow: Prompts longer than the context: ``"error"`` or ``"drop"`` (then the rows may be
            measured on different queries; ``n`` counts the 1-shot ones).
        progress: Show progress bars.
    """
    _refuse_inference_mode()
    if many_shots is None:
        many_shots = 3 if task.name == "agnews" else 5
    if many_shots < 2:
        raise AnchorlensError(f"many_shots must be >= 2 (the vanilla many-shot row), got {many_shots}.")
    demos = sample_demonstrations(task, shots=1, seed=seed, aux_shots=aux_shots)
    check_classes(task, demos.demos)
    one_shot = Demonstrations(demos.demos, (), seed)
    many = sample_demonstrations(task, shots=many_shots, seed=seed)
    perm = np.random.default_rng(seed).permutation(len(many.demos))
    many_demos = Demonstrations(tuple(many.demos[int(i)] for i in perm), (), seed)
    queries = sample_test(task, n, seed)
    test_1 = build_prompts(model, task, queries, demonstrations=one_shot, on_overflow=on_overflow)
    test_many = build_prompts(model, task, queries, demonstrations=many_demos, on_overflow=on_overflow)

    def bar(name: str) -> bool | str:
        return f"{name} ({task.name})" if progress else False

    kw: dict[str, Any] = dict(batch_size=eval_batch_size, padding_side=padding_side)
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
        progress=bar("training"),
    )
    reweighted = module.predict(model, test_1, progress=bar("re-weighted"), **kw)
    return ReweightingResult(
        task=task.name,
        model=str(getattr(model.cfg, "model_name", "")),
        seed=seed,
        n=len(test_1),
        n_train=len(demos.aux),
        many_shots=many_shots,
        vanilla_1shot=vanilla.accuracy,
        vanilla_5shot=vanilla_many.accuracy,
        reweighting=reweighted.accuracy,
        train_seconds=log.seconds,
        beta_shape=tuple(int(x) for x in module.beta.shape),
        losses=log.losses,
        epoch_losses=log.epoch_losses,
        stopped=log.stopped,
        predictions={"vanilla_1shot": vanilla, "vanilla_5shot": vanilla_many, "reweighting": reweighted},
        module=module,
    )
