"""The one exception type anchorlens raises for bad input (a subclass of ``ValueError``)."""

from __future__ import annotations


class AnchorlensError(ValueError):
    """Bad input: the message says what was wrong and what to do about it."""
