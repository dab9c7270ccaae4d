"""Label regimes side by side: does the anchors story hold with natural, flipped and unrelated label words?

``anchorlens reproduce --labels natural,flipped,unrelated`` runs the whole reproduction once per regime
(the first regime's report at ``OUT/``, the others' under ``OUT/regimes/<regime>/``, each with its own
cache) and adds a section to the first report that compares, per task and regime:

- **crossover layer**: where the saliency curves switch from S_wp-dominant to S_pq-dominant (the layer at
  which that step fits the normalised curves best: fewest layers on the wrong side; None when S_pq never
  dominates);
- **isolation effect**: label loyalty with random words isolated in the first k layers minus label loyalty
  with label words isolated there (positive: cutting the label words' edges changes more predictions);
- **deep AUCROC**: the deep-third mean of AUCROC_l (target -> label-word attention vs the prediction);
- **re-weighting gain**: re-weighted 1-shot accuracy minus vanilla 1-shot accuracy;
- **accuracy**: vanilla 1-shot accuracy;

and each regime's claim verdicts with their intervals. Small models cannot follow flipped or unrelated
labels (Wei et al. 2023, arXiv 2303.03846): the comparison shows whether label words still act as anchors
when their meaning no longer gives the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from anchorlens.core.tasks import LABEL_REGIMES
from anchorlens.errors import AnchorlensError
from anchorlens.experiments.base import Summary
from anchorlens.experiments.deep.summary import DeepSummary
from anchorlens.experiments.isolation.summary import IsolationSummary
from anchorlens.experiments.reweighting.summary import ReweightingSummary
from anchorlens.experiments.saliency.summary import SaliencySummary

#: The comparison's columns: key, heading, format.
COLUMNS = (
    ("label_words", "label words", "{}"),
    ("accuracy", "1-shot accuracy", "{:.1%}"),
    ("crossover", "crossover layer", "{}"),
    ("isolation_effect", "isolation effect", "{:+.2f}"),
    ("deep_aucroc", "deep-third AUCROC", "{:.2f}"),
    ("reweighting_gain", "re-weighting gain", "{:+.1%}"),
)


def parse_regimes(text: str) -> str:
    """``--labels``: one regime or several, comma-separated (``natural,flipped,unrelated``), each once."""
    regimes = [r.strip() for r in text.split(",") if r.strip()]
    bad = [r for r in regimes if r not in LABEL_REGIMES]
    if not regimes or bad or len(set(regimes)) != len(regimes):
        raise AnchorlensError(
            f"--labels takes regimes from {', '.join(LABEL_REGIMES)}, comma-separated, each once; got {text!r}."
        )
    return ",".join(regimes)


def regime_rows(results: dict[str, Any], summaries: dict[str, Summary]) -> dict[str, dict[str, Any]]:
    """Per task, the comparison's numbers from one reproduction's typed summaries (None: not run)."""
    sal, iso, deep, rw = (summaries.get(name) for name in ("saliency", "isolation", "deep", "reweighting"))
    rows: dict[str, dict[str, Any]] = {}
    for task in results["tasks"]:
        words = results.get("label_words", {}).get(task, [])
        rows[task] = {
            "label_words": ", ".join(w.strip() for w in words),
            "crossover": sal.crossover(task) if isinstance(sal, SaliencySummary) else None,
            "isolation_effect": iso.effect(task) if isinstance(iso, IsolationSummary) else None,
            "deep_aucroc": deep.deep_third(task) if isinstance(deep, DeepSummary) else None,
            "accuracy": rw.accuracy(task) if isinstance(rw, ReweightingSummary) else None,
            "reweighting_gain": rw.gain(task) if isinstance(rw, ReweightingSummary) else None,
        }
    return rows


def regime_summary(results: dict[str, Any], summaries: dict[str, Summary]) -> dict[str, Any]:
    """One regime's entry of ``results.json["regimes"]``: per task its rows, and its claims' verdicts."""
    claims = {k: {"verdict": c["verdict"], "ci": c["ci"]} for k, c in results.get("claims", {}).items()}
    return {"per_task": regime_rows(results, summaries), "claims": claims}


RunOne = Callable[..., tuple[dict[str, Any], dict[str, Summary]]]


def reproduce_regimes(cfg: Any, progress: bool, run_one: RunOne) -> dict[str, Any]:
    """``run_one`` (one regime's reproduction) once per regime of ``cfg.labels`` (comma-separated); the
    first regime's results, with ``"regimes"``: every regime's :func:`regime_summary`. Your own
    ``label_words`` go to ``unrelated``."""
    first, *others = cfg.labels.split(",")
    compared: dict[str, Any] = {}
    for regime in others:
        sub = replace(
            cfg,
            labels=regime,
            label_words=cfg.label_words if regime == "unrelated" else (),
            out=str(Path(cfg.out) / "regimes" / regime),
        )
        compared[regime] = regime_summary(*run_one(sub, progress))
    main = replace(cfg, labels=first, label_words=cfg.label_words if first == "unrelated" else ())
    return run_one(main, progress, regimes=compared)[0]


def regime_section(results: dict[str, Any], fmt: str) -> list[tuple[str, str]]:
    """The report's section comparing label regimes (none unless several were run): ``[(title, body)]``."""
    from anchorlens.render.tables import table

    regimes: dict[str, Any] = results.get("regimes") or {}
    if len(regimes) < 2:
        return []
    head = ["task", "labels", *(h for _, h, _ in COLUMNS)]
    rows = [
        [task, regime, *(_cell(row.get(k), f) for k, _, f in COLUMNS)]
        for task in results["tasks"]
        for regime, entry in regimes.items()
        if (row := entry["per_task"].get(task))
    ]
    names = list(next(iter(regimes.values()))["claims"])
    verdicts = [
        [regime, *(_verdict(entry["claims"].get(n)) for n in names)] for regime, entry in regimes.items()
    ]
    body = table(head, rows, fmt) + "\n\n" + table(["labels", *names], verdicts, fmt)
    return [("Label regimes: natural, flipped and unrelated label words", body)]


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None or value == "" else fmt.format(value)


def _verdict(claim: dict[str, Any] | None) -> str:
    if not claim:
        return "-"
    lo, hi = claim["ci"]
    ci = "" if lo is None or hi is None else f" [{lo:+.2f}, {hi:+.2f}]"
    return f"{claim['verdict']}{ci}"
