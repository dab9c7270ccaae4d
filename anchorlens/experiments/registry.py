"""The registry: every experiment's declaration, in the paper's (and the report's) order.

The CLI and ``anchorlens reproduce`` loop over :data:`REGISTRY`. Adding an experiment is one folder (its
``compute``, ``summary``, ``claim``, ``report`` and ``spec`` modules) and one line here. Importing this
module imports neither torch nor matplotlib: each declaration imports its computation when it runs.
"""

from __future__ import annotations

from anchorlens.errors import AnchorlensError
from anchorlens.experiments.base import Experiment
from anchorlens.experiments.compression.spec import COMPRESSION
from anchorlens.experiments.deep.spec import DEEP
from anchorlens.experiments.diagnosis.spec import DIAGNOSIS
from anchorlens.experiments.isolation.spec import ISOLATION
from anchorlens.experiments.reweighting.spec import REWEIGHTING
from anchorlens.experiments.saliency.spec import SALIENCY

#: Every experiment by name, in the paper's order.
REGISTRY: dict[str, Experiment] = {
    e.name: e for e in (SALIENCY, ISOLATION, DEEP, REWEIGHTING, COMPRESSION, DIAGNOSIS)
}

#: The experiments' names, in the paper's order.
EXPERIMENTS = tuple(REGISTRY)


def get(name: str) -> Experiment:
    """The experiment called ``name`` (or whose sub-command is ``name``)."""
    for e in REGISTRY.values():
        if name in (e.name, e.command.name):
            return e
    raise AnchorlensError(f"Unknown experiment {name!r}; choose from {', '.join(EXPERIMENTS)}.")
