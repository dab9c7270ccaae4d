"""Pieces of the report's pages: a claim's line (statistic, interval, verdict), a verdict's colour, an
embedded PNG and the first prompt's flow view."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from anchorlens.core.tasks import Task
from anchorlens.types import Model


def claim_line(claim: dict[str, Any] | None) -> str:
    """The one verdict of a claim, as the CLI and both report pages print it: ``"holds: <statistic> =
    0.249, 95% CI [0.201, 0.292] over 80 queries"``, plus, for an inconclusive claim, about how many queries
    per task and seed would decide it (``"no claim"`` without one)."""
    if not claim:
        return "no claim"
    lo, hi = claim["ci"]
    level = round(100 * claim.get("level", 0.95))
    interval = "no interval" if lo is None or hi is None else f"{level}% CI [{lo:.3f}, {hi:.3f}]"
    estimate = "undefined" if claim["estimate"] is None else f"{claim['estimate']:.3f}"
    line = f"{claim['verdict']}: {claim['statistic']} = {estimate}, {interval} over {claim['n']} queries"
    if claim["verdict"] == "inconclusive" and claim.get("n_to_decide"):
        line += (
            f" (the observed effect would decide it at about n = {claim['n_to_decide']} per task and seed)"
        )
    if claim.get("note"):
        line += f"; {claim['note']}"
    return line


def png_tag(path: Path, alt: str) -> str:
    """An ``<img>`` tag with the PNG at ``path`` embedded (the page needs no other file)."""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def verdict_class(claim: dict[str, Any] | None) -> str:
    """The verdict's colour: green when the claim holds, red when it does not, plain when inconclusive."""
    verdict = (claim or {}).get("verdict")
    return {"holds": "holds", "does_not_hold": "nothold"}.get(str(verdict), "")


def first_prompt_view(model: Model, task: Task, shots: int, seed: int) -> str:
    """The report's flow view of ``task``'s first prompt: the SVG flow diagram and the circuitsvis
    saliency view (inlined, offline)."""
    from anchorlens.core.prompts import build_prompts
    from anchorlens.experiments.saliency.compute import saliency
    from anchorlens.render.flows import flow_diagram, saliency_heads_view

    p = build_prompts(model, task, n=1, shots=shots, seed=seed)[0]
    matrices = saliency(model, [p], keep="layers").matrices
    assert matrices is not None
    title = f"{task.name}: arcs = saliency per layer"
    return (
        flow_diagram(model, p, matrices[0], title=title)
        + saliency_heads_view(model, p, matrices[0]).local_src
    )
