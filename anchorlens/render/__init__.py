"""Pictures of results: matplotlib replicas of the paper's figures and offline HTML flow views.

Names are imported on first use (PEP 562), so the report's page helpers (``anchorlens.render.page``) load
neither matplotlib nor torch.
"""

# ruff: noqa: F401  (TYPE_CHECKING re-exports; __all__ comes from the lazy table)
from __future__ import annotations

from typing import TYPE_CHECKING

from anchorlens._lazy import lazy_exports

_LAZY = {
    "plot_confusion": "anchorlens.experiments.diagnosis.figure",
    "plot_deep": "anchorlens.render.figures",
    "plot_isolation": "anchorlens.render.figures",
    "plot_isolation_sweep": "anchorlens.render.figures",
    "plot_saliency": "anchorlens.render.figures",
    "flow_diagram": "anchorlens.render.flows",
    "saliency_heads_view": "anchorlens.render.flows",
    "saliency_tokens_view": "anchorlens.render.flows",
    "save_html": "anchorlens.render.flows",
    "token_strings": "anchorlens.render.flows",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


if TYPE_CHECKING:
    from anchorlens.experiments.diagnosis.figure import plot_confusion
    from anchorlens.render.figures import plot_deep, plot_isolation, plot_isolation_sweep, plot_saliency
    from anchorlens.render.flows import (
        flow_diagram,
        saliency_heads_view,
        saliency_tokens_view,
        save_html,
        token_strings,
    )
