"""Token roles over tasks and seeds: role x role flow matrices per third of the layers, what each role
gathers from the demonstrations' text, and each role's isolation loyalties."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from anchorlens.core.layers import layer_thirds
from anchorlens.experiments.base import Runs, Settings, as_json, mean, per_task

THIRDS = ("shallow", "middle", "deep")
LOYALTIES = ("label_loyalty", "word_loyalty", "accuracy", "positions")

#: A role x role matrix (``[role_to][role_from]``; None: no pair) or None for an empty third.
Matrix = list[list[float | None]] | None


def _nanmean(arrays: Sequence[Any]) -> Any:
    """Element-wise mean of nested lists ignoring None (None where every value is None)."""
    arrs = [np.asarray(a, dtype=float) for a in arrays if a is not None]
    if not arrs:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN cells stay NaN
        m = np.asarray(np.nanmean(np.stack(arrs), 0), dtype=object)
    m[np.isnan(m.astype(float))] = None
    return m.tolist()


@dataclass(frozen=True)
class TaskRoles:
    """One task, averaged over seeds.

    Attributes:
        thirds: Per third of the layers (``shallow``, ``middle``, ``deep``), the role x role matrix of mean
            saliency ``[role_to][role_from]`` (averaged over prompts and the third's layers).
        gather: Per role, the mean saliency from the demonstrations' text into its demonstration positions,
            over the shallow third (the claim's numbers, averaged over prompts; None: no such pair).
    """

    thirds: dict[str, Matrix]
    gather: dict[str, float | None]

    def to_json(self) -> dict[str, Any]:
        return {"thirds": self.thirds, "gather": self.gather}


@dataclass(frozen=True)
class RoleLoyalty:
    """One role isolated in the first or last k layers: label and word loyalty, accuracy and the mean
    number of isolated positions per prompt, averaged over seeds and tasks."""

    role: str
    layers: str
    k: int
    label_loyalty: float
    word_loyalty: float
    accuracy: float
    positions: float

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class RolesSummary:
    """The roles' flows per task and averaged over tasks (``thirds``), and their isolation averaged over
    tasks and seeds (empty when it was skipped)."""

    roles: list[str]
    per_task: dict[str, TaskRoles]
    thirds: dict[str, Matrix]
    isolation: list[RoleLoyalty]

    def to_json(self) -> dict[str, Any]:
        return {
            "roles": self.roles,
            "per_task": {t: v.to_json() for t, v in self.per_task.items()},
            "thirds": self.thirds,
            "isolation": [r.to_json() for r in self.isolation],
        }


def _shallow_gather(flows: dict[str, Any]) -> list[float | None] | None:
    """Per role, a run's ``gather`` curve (``[layer][role]``) averaged over the shallow third."""
    shallow = layer_thirds(int(flows["n_layers"]))[0]
    return _nanmean(flows["gather"][shallow.start : shallow.stop]) if shallow else None


def summarize(runs: Runs, s: Settings) -> RolesSummary:
    """Matrices and gathering averaged over seeds per task, then over tasks; loyalties over both."""
    from anchorlens.experiments.roles.compute import ROLES

    tasks: dict[str, TaskRoles] = {}
    for t, seeds in per_task(runs, s.tasks).items():
        flows = [r["flows"] for r in seeds]
        thirds = {th: _nanmean([f["thirds"][th] for f in flows]) for th in THIRDS}
        gather = _nanmean([_shallow_gather(f) for f in flows])
        tasks[t] = TaskRoles(thirds, dict(zip(ROLES, gather, strict=True)) if gather else {})
    overall = {th: _nanmean([v.thirds[th] for v in tasks.values()]) for th in THIRDS}
    rows: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for r in runs.values():
        iso = as_json(r).get("isolation")
        for run in iso["results"] if iso else []:
            rows.setdefault((run["role"], run["layers"], run["k"]), []).append(run)
    loyal = [
        RoleLoyalty(role, layers, k, *(mean([x[m] for x in xs]) for m in LOYALTIES))
        for (role, layers, k), xs in rows.items()
    ]
    return RolesSummary(list(ROLES), tasks, overall, loyal)
