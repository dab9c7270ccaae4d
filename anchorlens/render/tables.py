"""Markdown and HTML tables for the report's sections."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def table(head: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str) -> str:
    """A Markdown (``fmt="md"``) or HTML table."""
    if fmt == "md":
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    th = "".join(f"<th>{html.escape(str(h))}</th>" for h in head)
    trs = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{trs}</tbody></table>"


def pct(x: float | None) -> str:
    """A share as a percentage with one decimal (``n/a`` when undefined)."""
    return "n/a" if x is None else f"{100 * x:.1f}"


def curve(values: Sequence[float | None]) -> str:
    """A curve's values with two decimals (``-`` where undefined)."""
    return " ".join("-" if a is None else f"{a:.2f}" for a in values)
