"""The anchor re-weighting module (paper section 3.1, Eq. 12): ``beta``, its hooks, saving and loading.

The target's attention to each demonstration's label word is rescaled by a learnable ``exp(beta)`` in
every layer and head, after the softmax and without renormalization::

    A'_{l,h}(q, p_i) = exp(beta_{l,h,c(i)}) * A_{l,h}(q, p_i)

Only the target row ``q`` and the label-word columns ``p_i`` change. ``beta`` is ``[n_layers, n_heads,
n_classes]`` (one value per class, shared by all of that class's demonstrations) or, with
``per_shot=True``, ``[n_layers, n_heads, n_demos]`` (one per demonstration, in prompt order). It starts
at 0, which is exactly vanilla ICL. Any number of shots, padded batches, grouped-query models
(``hook_pattern`` is per query head, so ``n_heads`` is ``cfg.n_heads``) and multi-token label words (the
first sub-token is scaled, as in the paper; ``all_subtokens=True`` scales every sub-token).

Training lives in :mod:`anchorlens.experiments.reweighting.training`, Table 1 in :mod:`anchorlens.experiments.reweighting.table`.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn

from anchorlens.core.batch import PromptBatch, collate, pad_token_id
from anchorlens.core.hooks import FwdHook, HookFn, pattern_name, scale_entries, scale_entries_hooks
from anchorlens.core.metrics import Predictions
from anchorlens.core.prefix import prefix_safe
from anchorlens.core.prompts import IclPrompt, label_token_ids
from anchorlens.core.runner import HookSpec, LoopOptions, collect_predictions, current_batch
from anchorlens.core.sampling import Demonstrations
from anchorlens.core.tasks import Example, Task
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model, PaddingSide, Pattern, PrefixPolicy

Shots = Literal["class", "demo"]
Beta = Float[Tensor, "layer head slot"]
Entries = Int[Tensor, " entry"]

FILE_FORMAT = "anchorlens.experiments.reweighting/1"
# Metadata compared on load: (key, what it describes). Others (training settings) are informational.
_MODEL_KEYS = ("model_name", "n_layers", "n_heads", "d_model", "d_vocab")
_TASK_KEYS = ("task", "label_words")


def demonstrations_fingerprint(demos: Sequence[Example]) -> str:
    """A short hash of the demonstrations (texts and labels, in prompt order), stored with ``beta``."""
    blob = json.dumps([[e.text, e.label] for e in demos], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _model_meta(model: Model) -> dict[str, Any]:
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

        module, log = al.train_reweighting(model, task, seed=42)  # or AnchorReweighting.for_model + fit()
        pred = al.predict(model, prompts, fwd_hooks=module.hooks)  # hooks per batch
        with module.applied(model, prompts[0]):                    # any analysis, re-weighted
            sal = al.saliency(model, prompts)
            logits, cache = model.run_with_cache(torch.tensor([prompts[0].tokens]))
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
        model: Model,
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
        # a "query" batch on a full-prefix cache: key column = prompt position (compression's: first sub-token)
        on_cache = batch.kind == "query"
        columns_are_positions = on_cache and all(
            tuple(batch.label_positions[i].tolist()) == p.label_positions for i, p in enumerate(batch.prompts)
        )
        if not self.all_subtokens or (on_cache and not columns_are_positions):
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
                off = 0 if on_cache else int(batch.offset[i])
                for d, (lab, span) in enumerate(zip(p.demo_labels, p.label_spans, strict=True)):
                    for t in span:
                        r.append(i)
                        k.append(t + off)
                        s.append(d if self.per_shot else lab)
            rows, keys, slots = (torch.tensor(x, dtype=torch.long, device=device) for x in (r, k, s))
        kept = keys >= 0  # a "query" batch's label word not among the cached keys has column -1
        rows, keys, slots = rows[kept], keys[kept], slots[kept]
        return rows, batch.target[rows], keys, slots

    @prefix_safe  # beta acts on the target's row only; a "prefix" batch gets no hooks
    def hooks(self, batch: PromptBatch) -> list[FwdHook]:
        """``(hook_name, fn)`` pairs on every ``blocks.{l}.attn.hook_pattern`` for this batch, usable as any
        experiment's ``fwd_hooks`` (pass the method itself: ``fwd_hooks=module.hooks``), in
        ``model.hooks(fwd_hooks=...)`` or ``run_with_hooks``.

        Each function returns a copy of the pattern whose entries ``[row, :, target, label word]`` are
        multiplied by ``exp(beta[layer, :, slot])`` (no renormalization); gradients reach ``beta``.
        Positions are per row, so the hooks are only valid for this ``batch``; a ``"prefix"`` batch (the
        demonstrations alone, no target) gets none.
        """
        if batch.kind == "prefix":
            return []
        rows, query, keys, slots = self.entries(batch)
        hooks = scale_entries_hooks(
            range(self.n_layers), (rows, query, keys), lambda layer: self._log_factor(layer, slots)
        )
        return [(name, self._checked(fn)) for name, fn in hooks]

    def _checked(self, fn: HookFn) -> HookFn:
        """``fn`` refusing a pattern with another number of heads than ``beta``."""
        n_heads = int(self.beta.shape[1])

        def hook(pattern: Pattern, hook: Any) -> Pattern:
            if pattern.shape[1] != n_heads:
                raise AnchorlensError(
                    f"beta has {n_heads} heads per layer but {hook.name} has {pattern.shape[1]}; "
                    "this beta belongs to another model."
                )
            return fn(pattern, hook=hook)

        return hook

    @property
    def n_layers(self) -> int:
        return int(self.beta.shape[0])

    def _log_factor(self, layer: int, slots: Entries) -> Float[Tensor, "head entry"]:
        return self.beta[layer][:, slots.to(self.beta.device)]

    @contextmanager
    def applied(self, model: Model, prompt: IclPrompt | None = None) -> Iterator[AnchorReweighting]:
        """Re-weight every forward pass of ``model`` inside the block (the shape of SAELens' ``saes()``).

        anchorlens experiments run inside take each batch's positions from the loop
        (:func:`anchorlens.core.runner.current_batch`); a plain TransformerLens call (``model(tokens)``,
        ``run_with_cache``) is taken to be ``prompt``'s demonstrations followed by a query, unpadded, with the
        target at the last position of every row. The hooks are attached with ``model.hooks(...)`` and
        removed on exit, even after an exception; they run before hooks added inside the block.

        Raises:
            AnchorlensError: ``model`` has another shape (layers, heads, ...) than the one ``beta`` was
                made for; at the first plain call without ``prompt``.
        """
        self.check(model, source="applied(): this beta")
        last: dict[str, Any] = {}

        def batch_entries(pattern: Pattern) -> tuple[Entries, Entries, Entries, Entries] | None:
            batch = current_batch()
            if batch is None:  # a plain TL call: one batch per (rows, positions, device), not per layer
                shape = (pattern.shape[0], pattern.shape[-2], pattern.device)
                if last.get("plain") != shape:
                    last.update(plain=shape, plain_batch=self._plain_batch(model, prompt, pattern))
                batch = last["plain_batch"]
            if last.get("batch") is not batch:
                last.update(batch=batch, entries=None if batch.kind == "prefix" else self.entries(batch))
            return last["entries"]

        def make(layer: int) -> HookFn:
            def hook(pattern: Pattern, hook: Any) -> Pattern:
                found = batch_entries(pattern)
                if found is None:
                    return pattern
                rows, query, keys, slots = found
                return scale_entries(pattern, (rows, query, keys), self._log_factor(layer, slots))

            return hook

        hooks = [
            (pattern_name(layer), prefix_safe(self._checked(make(layer)))) for layer in range(self.n_layers)
        ]
        with model.hooks(fwd_hooks=hooks):
            yield self

    def _plain_batch(self, model: Model, prompt: IclPrompt | None, pattern: Pattern) -> PromptBatch:
        """Positions for a forward pass outside anchorlens: ``prompt``'s label words, the last row as target."""
        if prompt is None:
            raise AnchorlensError(
                "A forward pass outside anchorlens' experiments ran under module.applied(model) without a "
                "prompt, so the label-word positions are unknown: use module.applied(model, prompts[0])."
            )
        n, q = int(pattern.shape[0]), int(pattern.shape[-2])
        batch = collate([prompt] * n, pad_token_id(model), device=pattern.device)
        return replace(batch, target=torch.full((n,), q - 1, device=pattern.device))

    # ----------------------------------------------------------------------------------------------
    # Compatibility, saving and loading

    def check(
        self,
        model: Model = None,
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
        model: Model = None,
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
    # Prediction (training is :func:`anchorlens.experiments.reweighting.training.fit`)

    def predict(
        self,
        model: Model,
        prompts: Sequence[IclPrompt],
        *,
        fwd_hooks: HookSpec = None,
        batch_size: int = 8,
        top_k: int = 5,
        padding_side: PaddingSide = "right",
        progress: bool | str = False,
        prefix: PrefixPolicy = "auto",
    ) -> Predictions:
        """:func:`anchorlens.predict` with this re-weighting applied (its hooks follow ``fwd_hooks``)."""
        self.check(model)
        options = LoopOptions(batch_size, padding_side, progress, desc="predict")
        loop: dict[str, Any] = dict(fwd_hooks=fwd_hooks, own_hooks=self.hooks, options=options, prefix=prefix)
        return collect_predictions(model, prompts, top_k=top_k, **loop)


def reweighting_hooks(module: AnchorReweighting, batch: PromptBatch) -> list[FwdHook]:
    """The hook-factory form of :meth:`AnchorReweighting.hooks`."""
    return module.hooks(batch)
