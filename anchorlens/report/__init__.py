"""``anchorlens reproduce``: every experiment, summarised over tasks and seeds, as one offline report."""

# ruff: noqa: F401  (TYPE_CHECKING re-exports; __all__ comes from the lazy table)
from __future__ import annotations

from typing import TYPE_CHECKING

from anchorlens._lazy import lazy_exports

_LAZY = {
    "ReproduceConfig": "anchorlens.report.run",
    "reproduce": "anchorlens.report.run",
}
__all__ = sorted(_LAZY)
__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())

if TYPE_CHECKING:
    from anchorlens.report.run import ReproduceConfig, reproduce
