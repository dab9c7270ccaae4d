"""Pictures of results: matplotlib replicas of the paper's figures and offline HTML flow views."""

from anchorlens.render.diagnosis import plot_confusion
from anchorlens.render.figures import plot_deep, plot_isolation, plot_isolation_sweep, plot_saliency
from anchorlens.render.flows import (
    flow_diagram,
    saliency_heads_view,
    saliency_tokens_view,
    save_html,
    token_strings,
)

__all__ = [
    "flow_diagram",
    "plot_confusion",
    "plot_deep",
    "plot_isolation",
    "plot_isolation_sweep",
    "plot_saliency",
    "saliency_heads_view",
    "saliency_tokens_view",
    "save_html",
    "token_strings",
]
