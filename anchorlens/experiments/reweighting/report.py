"""Re-weighting in the report (Table 1 beside the paper's GPT2-XL numbers) and the sub-command's file."""

from __future__ import annotations

from typing import Any

from anchorlens.experiments.base import CliRun, Settings
from anchorlens.experiments.reweighting.summary import ReweightingSummary
from anchorlens.render.tables import pct, table

#: Table 1 rows: result key -> the paper's row name.
TABLE1_ROWS: dict[str, str] = {
    "vanilla_1shot": "Vanilla ICL (1-shot)",
    "vanilla_many_shot": "Vanilla ICL (5-shot; AG News 3)",
    "reweighting": "Anchor re-weighting (1-shot)",
}

#: Table 1 of the paper, GPT2-XL accuracy (%) per task and on average, keyed like :data:`TABLE1_ROWS`.
TABLE1: dict[str, dict[str, float]] = {
    "vanilla_1shot": {"sst2": 61.28, "trec": 57.56, "agnews": 73.32, "emoc": 15.44, "avg": 51.90},
    "vanilla_many_shot": {"sst2": 64.75, "trec": 60.40, "agnews": 52.52, "emoc": 9.80, "avg": 46.87},
    "reweighting": {"sst2": 90.07, "trec": 60.92, "agnews": 81.94, "emoc": 41.64, "avg": 68.64},
}


def reweighting_table(summary: ReweightingSummary, cfg: Settings, fmt: str) -> str:
    """Table 1: accuracy (%) per task, mean ± std over seeds, with the paper's GPT2-XL values."""
    rows = []
    for key, label in TABLE1_ROWS.items():
        paper = TABLE1[key]
        cells = []
        for t in cfg.tasks:
            m = summary.per_task[t][key]
            std = "" if m["std"] is None else f" ± {100 * m['std']:.1f}"
            cells.append(f"{pct(m['mean'])}{std} (paper {paper.get(t, '-')})")
        rows.append([label, *cells, f"{pct(summary.average[key])} (paper {paper['avg']})"])
    return table(["method", *cfg.tasks, "average"], rows, fmt)


def reweighting_files(ctx: CliRun, result: Any) -> None:
    """``beta.pt``: the trained re-weighting (``AnchorReweighting.load`` reads it back)."""
    assert result.module is not None
    result.module.save(ctx.out / "beta.pt")
