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

from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from anchorlens.core.layers import third_means
from anchorlens.core.tasks import LABEL_REGIMES
from anchorlens.errors import AnchorlensError

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


def crossover(wp: Sequence[float], pq: Sequence[float]) -> int | None:
    """The layer where a step from S_wp-dominant (before) to S_pq-dominant (from there on) fits best: the
    fewest layers on the wrong side, the earliest such layer on ties; None when S_pq dominates nowhere."""
    above = np.asarray(pq, dtype=float) > np.asarray(wp, dtype=float)
    if not above.any():
        return None
    wrong = [int(above[:layer].sum() + (~above[layer:]).sum()) for layer in range(len(above))]
    return int(np.argmin(wrong))


def regime_rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per task, the comparison's numbers from one reproduction's ``results.json`` (None: not run)."""
    rows: dict[str, dict[str, Any]] = {}
    for task in results["tasks"]:
        words = results.get("label_words", {}).get(task, [])
        row: dict[str, Any] = {"label_words": ", ".join(w.strip() for w in words)}
        sal = results.get("saliency", {}).get("per_task", {}).get(task)
        row["crossover"] = crossover(sal["S_wp_norm"], sal["S_pq_norm"]) if sal else None
        iso = results.get("isolation", {}).get("per_task", {}).get(task)
        row["isolation_effect"] = (
            iso["random/first"]["label_loyalty"] - iso["label/first"]["label_loyalty"] if iso else None
        )
        auc = results.get("deep", {}).get("per_task", {}).get(task, {}).get("aucroc")
        row["deep_aucroc"] = third_means(auc)[2] if auc and None not in auc else None
        rw = results.get("reweighting", {}).get("per_task", {}).get(task)
        row["accuracy"] = rw["vanilla_1shot"]["mean"] if rw else None
        row["reweighting_gain"] = rw["reweighting"]["mean"] - rw["vanilla_1shot"]["mean"] if rw else None
        rows[task] = row
    return rows


def regime_summary(results: dict[str, Any]) -> dict[str, Any]:
    """One regime's entry of ``results.json["regimes"]``: per task its rows, and its claims' verdicts."""
    claims = {k: {"verdict": c["verdict"], "ci": c["ci"]} for k, c in results.get("claims", {}).items()}
    return {"per_task": regime_rows(results), "claims": claims}


def reproduce_regimes(cfg: Any, progress: bool, reproduce: Callable[..., dict[str, Any]]) -> dict[str, Any]:
    """``reproduce`` once per regime of ``cfg.labels`` (comma-separated); the first regime's results, with
    ``"regimes"``: every regime's :func:`regime_summary`. Your own ``label_words`` go to ``unrelated``."""
    first, *others = cfg.labels.split(",")
    compared: dict[str, Any] = {}
    for regime in others:
        sub = replace(
            cfg,
            labels=regime,
            label_words=cfg.label_words if regime == "unrelated" else (),
            out=str(Path(cfg.out) / "regimes" / regime),
        )
        compared[regime] = regime_summary(reproduce(sub, progress))
    main = replace(cfg, labels=first, label_words=cfg.label_words if first == "unrelated" else ())
    return dict(reproduce(main, progress, regimes=compared))


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
