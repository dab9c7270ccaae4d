"""Compression in the report: Table 2 (loyalties) and Table 3 (speed-ups) beside the paper's."""

from __future__ import annotations

from anchorlens.experiments.base import Settings
from anchorlens.experiments.compression.methods import METHOD_NAMES
from anchorlens.experiments.compression.summary import CompressionSummary
from anchorlens.render.tables import pct, table

#: Table 2 of the paper: (label loyalty, word loyalty, accuracy) in %, averaged over the four tasks.
TABLE2: dict[str, dict[str, tuple[float, float, float]]] = {
    "full": {"GPT2-XL": (100.0, 100.0, 51.90), "GPT-J": (100.0, 100.0, 56.82)},
    "text_anchor": {"GPT2-XL": (51.05, 36.65, 38.77), "GPT-J": (53.45, 43.85, 40.83)},
    "hidden_random": {"GPT2-XL": (48.96, 5.59, 39.96), "GPT-J": (49.03, 2.16, 31.51)},
    "hidden_random_top": {"GPT2-XL": (57.52, 4.49, 41.72), "GPT-J": (71.10, 11.36, 52.34)},
    "hidden_anchor": {"GPT2-XL": (79.47, 62.17, 45.04), "GPT-J": (89.06, 75.04, 55.59)},
}

#: Table 3 of the paper: Hidden_anchor's speed-up over the full prompt, per model and task.
TABLE3: dict[str, dict[str, float]] = {
    "GPT2-XL": {"sst2": 1.1, "trec": 1.5, "agnews": 2.5, "emoc": 1.4},
    "GPT-J": {"sst2": 1.5, "trec": 2.2, "agnews": 2.9, "emoc": 1.9},
}


def compression_table(summary: CompressionSummary, cfg: Settings, fmt: str) -> str:
    """Table 2 (loyalties and accuracy, %, averaged over tasks) and Table 3 (speed-ups per task)."""
    rows = []
    for m, name in METHOD_NAMES.items():
        a = summary.average[m]
        gx, gj = TABLE2[m]["GPT2-XL"], TABLE2[m]["GPT-J"]
        ours = [pct(a["label_loyalty"]), pct(a["word_loyalty"]), pct(a["accuracy"])]
        rows.append([name, *ours, " / ".join(map(str, gx)), " / ".join(map(str, gj))])
    head = [
        "method",
        "label loyalty",
        "word loyalty",
        "accuracy",
        "paper GPT2-XL (LL / WL / acc)",
        "paper GPT-J",
    ]
    speed_rows = [
        [
            t,
            f"{v['speedup']:.2f}x" if v["speedup"] else "n/a",
            f"{v['speedup_batched']:.2f}x" if v["speedup_batched"] else "n/a",
            f"{v['ideal_speedup']:.2f}x",
            f"{v['demo_tokens']:.0f}",
            f"{v['query_tokens']:.0f}",
            f"{v['timed_queries']:.0f}" if v.get("timed_queries") else "all",
            f"{TABLE3['GPT2-XL'].get(t, '-')}x / {TABLE3['GPT-J'].get(t, '-')}x",
        ]
        for t, v in summary.speed.items()
    ]
    speed_head = [
        "task",
        "speed-up, batch 1",
        "batched",
        "ideal (tokens)",
        "L_demo",
        "L_x",
        "timed on (queries)",
        "paper GPT2-XL / GPT-J",
    ]
    return table(head, rows, fmt) + ("\n" if fmt == "md" else "") + table(speed_head, speed_rows, fmt)
