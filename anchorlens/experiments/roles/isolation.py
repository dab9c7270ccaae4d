"""Isolating each token role in the first or last k layers (the paper's section 2.2 isolation, for every role).

As :func:`anchorlens.isolation` isolates label words, every position of the role is cut from the earlier
tokens in the chosen layers (``A(p, j) = 0`` for ``j < p``, before the softmax by default): no information
flows into those positions there. Label and word loyalty are measured against the unmodified model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from anchorlens.core.backends import require_attention_edits
from anchorlens.core.batch import PromptBatch
from anchorlens.core.hooks import cut_edges_hooks
from anchorlens.core.metrics import Predictions, label_loyalty, word_loyalty
from anchorlens.core.prefix import check_policy, full_prompts_only
from anchorlens.core.prompts import IclPrompt
from anchorlens.core.runner import HookSpec, LoopOptions, collect_predictions, predict
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.isolation.compute import (
    LAYER_SETS,
    RunJson,
    SweepJson,
    isolation_mask,
    resolve_layers,
)
from anchorlens.experiments.roles.tagging import ISOLATED_ROLES, check_roles, token_roles
from anchorlens.types import FwdHook, Model, PaddingSide, PrefixPolicy


@dataclass(frozen=True)
class RoleIsolationRun(RunJson):
    """Every position of one role isolated in the first or last k layers, against the unmodified run.

    Attributes:
        role, layers, k: The setting (``layers``: ``"first"`` or ``"last"``).
        label_loyalty: Share of prompts whose predicted label is unchanged.
        word_loyalty: Mean Jaccard similarity of the top-5 vocabulary tokens at the target.
        accuracy: Against the gold labels.
        positions: Mean number of isolated positions per prompt.
    """

    role: str
    layers: str
    k: int
    label_loyalty: float
    word_loyalty: float
    accuracy: float
    positions: float
    predictions: Predictions | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class RoleIsolationResult(SweepJson):
    """Every role's isolation runs plus the unmodified reference run."""

    RUN: ClassVar[type[RunJson]] = RoleIsolationRun
    runs: tuple[RoleIsolationRun, ...]
    reference: Predictions = field(repr=False)
    mode: str = "pre"

    def get(self, role: str, layers: str) -> RoleIsolationRun:
        for run in self.runs:
            if (run.role, run.layers) == (role, layers):
                return run
        raise KeyError((role, layers))


def isolate_role(
    positions: Sequence[Sequence[int]], layers: Sequence[int], mode: str = "pre"
) -> Callable[[PromptBatch], list[FwdHook]]:
    """``fwd_hooks`` cutting, in ``layers``, every edge into each prompt's ``positions`` (prompts matched
    through ``batch.indices``): full prompts only, as the positions differ per prompt in the query."""
    layers = list(layers)

    def hooks(batch: PromptBatch) -> list[FwdHook]:
        if batch.kind != "full":
            raise AnchorlensError(f"Role isolation met a {batch.kind!r} batch; it needs full prompts.")
        cut = isolation_mask(batch, [positions[i] for i in batch.indices], allow_empty=True)
        return cut_edges_hooks(layers, cut, mode)

    return full_prompts_only(hooks)


def role_isolation(
    model: Model,
    prompts: Sequence[IclPrompt],
    *,
    k: int = 5,
    roles: Sequence[str] = ISOLATED_ROLES,
    layer_sets: Sequence[str] = LAYER_SETS,
    mode: str = "pre",
    batch_size: int = 8,
    padding_side: PaddingSide = "right",
    reference: Predictions | None = None,
    fwd_hooks: HookSpec = None,
    progress: bool = False,
    prefix: PrefixPolicy = "auto",
) -> RoleIsolationResult:
    """Isolate every position of each role in the first or last k layers; loyalties vs the unmodified run.

    Args:
        k: Number of isolated layers (the paper's isolation: 5).
        roles: Roles of :data:`ROLES` to isolate (default: all but the target).
        layer_sets: ``"first"`` and/or ``"last"``.
        mode: ``"pre"`` (-inf before the softmax, the paper's code) or ``"post"`` (zero after it).
        reference: The unmodified run, if already computed (else computed here, with ``fwd_hooks``).
        prefix: The reference run's prefix policy; the isolated runs always run full prompts.

    Raises:
        AnchorlensError: no prompts; an unknown role (the message lists them); k out of 1..n_layers; a bad
            ``mode`` or layer set.
    """
    if len(prompts) == 0:
        raise AnchorlensError("No prompts to isolate.")
    roles = check_roles(roles)
    if mode not in ("pre", "post"):
        raise AnchorlensError(f"mode must be 'pre' or 'post', got {mode!r}.")
    layer_lists = {s: resolve_layers(model.cfg.n_layers, s, k) for s in layer_sets}
    check_policy(prefix)
    require_attention_edits(model, ("hook_attn_scores" if mode == "pre" else "hook_pattern",))
    tags = [token_roles(p, model) for p in prompts]
    kw: dict[str, Any] = dict(batch_size=batch_size, padding_side=padding_side, prefix=prefix)
    ref = reference
    if ref is None:
        ref = predict(model, prompts, fwd_hooks=fwd_hooks, progress="reference" if progress else False, **kw)
    runs = []
    for role in roles:
        positions = [tuple(p for p, r in enumerate(t) if r == role) for t in tags]
        mean_positions = sum(map(len, positions)) / len(positions)
        for s, layers in layer_lists.items():
            desc = f"{role}, {s} {k} layers" if progress else False
            pred = collect_predictions(
                model,
                prompts,
                fwd_hooks=fwd_hooks,
                own_hooks=isolate_role(positions, layers, mode),
                options=LoopOptions(batch_size, padding_side, desc),
                prefix=prefix,
            )
            loyal = (label_loyalty(pred, ref), word_loyalty(pred, ref))
            runs.append(RoleIsolationRun(role, s, k, *loyal, pred.accuracy, mean_positions, predictions=pred))
    return RoleIsolationResult(tuple(runs), ref, mode)
