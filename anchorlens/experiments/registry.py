"""The registry: every experiment's declaration, in the paper's (and the report's) order.

The CLI and ``anchorlens reproduce`` loop over :data:`REGISTRY`. Adding an experiment is one folder (its
``compute``, ``summary``, ``claim``, ``report`` and ``spec`` modules) and one line here. Importing this
module imports neither torch nor matplotlib: each declaration imports its computation when it runs.
Experiments beyond the paper (``opt_in=True``: heads, token roles, task vectors) have their sub-commands and
run in ``reproduce`` when ``--experiments`` names them.
"""

from __future__ import annotations

from anchorlens.errors import AnchorlensError
from anchorlens.experiments.base import Experiment
from anchorlens.experiments.compression.spec import COMPRESSION
from anchorlens.experiments.deep.spec import DEEP
from anchorlens.experiments.diagnosis.spec import DIAGNOSIS
from anchorlens.experiments.heads.spec import HEADS
from anchorlens.experiments.isolation.spec import ISOLATION
from anchorlens.experiments.reweighting.spec import REWEIGHTING
from anchorlens.experiments.roles.spec import ROLES_EXPERIMENT
from anchorlens.experiments.saliency.spec import SALIENCY
from anchorlens.experiments.taskvec.spec import TASKVEC

#: Every experiment by name: the paper's, in its order, then the opt-in ones.
REGISTRY: dict[str, Experiment] = {
    e.name: e
    for e in (
        SALIENCY,
        ISOLATION,
        DEEP,
        REWEIGHTING,
        COMPRESSION,
        DIAGNOSIS,
        HEADS,
        ROLES_EXPERIMENT,
        TASKVEC,
    )
}

#: What ``reproduce`` runs by default: the paper's experiments, in its order (opt-in ones are left out).
EXPERIMENTS = tuple(name for name, e in REGISTRY.items() if not e.opt_in)


def get(name: str) -> Experiment:
    """The experiment called ``name`` (or whose sub-command is ``name``)."""
    for e in REGISTRY.values():
        if name in (e.name, e.command.name):
            return e
    raise AnchorlensError(f"Unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}.")
