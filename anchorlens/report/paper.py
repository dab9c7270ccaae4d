"""The paper's numbers and claims (Wang et al. 2023, GPT2-XL and GPT-J), quoted next to ours in the report.

Data only: nothing here computes. Accuracies and loyalties are percentages; speed-ups are ratios.
"""

from __future__ import annotations

from typing import Any

#: One line per experiment: what the paper reports (the report's "Paper:" line).
CLAIMS: dict[str, str] = {
    "saliency": "GPT2-XL: S_wp dominates the shallow layers and decays with depth; S_pq is low early and "
    "becomes the dominant flow in deep layers (Fig. 3, no numeric values given).",
    "isolation": "GPT2-XL and GPT-J: isolating label words in the first 5 layers strongly reduces label and "
    "word loyalty; isolating them in the last 5 layers, or isolating random words, has little effect (Fig. 4).",
    "deep": "AUCROC_l approaches ~0.8 in deep layers for GPT2-XL and GPT-J; R_l stays near 0 in shallow layers "
    "and rises sharply in middle and deep layers (Fig. 5).",
    "reweighting": "GPT2-XL accuracy, mean of 5 seeds (paper values in brackets).",
    "compression": "Averages over the four tasks (paper: GPT2-XL and GPT-J).",
    "diagnosis": "GPT2-XL on TREC: both heatmaps single out Description-Entity as the most confused pair, then "
    "Entity-Abbreviation and Description-Abbreviation (Fig. 6).",
}

#: Table 1 rows: result key -> the paper's row name.
TABLE1_ROWS: dict[str, str] = {
    "vanilla_1shot": "Vanilla ICL (1-shot)",
    "vanilla_many_shot": "Vanilla ICL (5-shot; AG News 3)",
    "reweighting": "Anchor re-weighting (1-shot)",
}

#: Table 1, GPT2-XL accuracy (%) per task and on average, keyed like :data:`TABLE1_ROWS`.
TABLE1: dict[str, dict[str, float]] = {
    "vanilla_1shot": {"sst2": 61.28, "trec": 57.56, "agnews": 73.32, "emoc": 15.44, "avg": 51.90},
    "vanilla_many_shot": {"sst2": 64.75, "trec": 60.40, "agnews": 52.52, "emoc": 9.80, "avg": 46.87},
    "reweighting": {"sst2": 90.07, "trec": 60.92, "agnews": 81.94, "emoc": 41.64, "avg": 68.64},
}

#: Table 2 method names, in the paper's row order.
METHOD_NAMES: dict[str, str] = {
    "full": "ICL (full prompt)",
    "text_anchor": "Text_anchor",
    "hidden_random": "Hidden_random",
    "hidden_random_top": "Hidden_random-top",
    "hidden_anchor": "Hidden_anchor",
}

#: Table 2: (label loyalty, word loyalty, accuracy) in %, averaged over the four tasks, per method and model.
TABLE2: dict[str, dict[str, tuple[float, float, float]]] = {
    "full": {"GPT2-XL": (100.0, 100.0, 51.90), "GPT-J": (100.0, 100.0, 56.82)},
    "text_anchor": {"GPT2-XL": (51.05, 36.65, 38.77), "GPT-J": (53.45, 43.85, 40.83)},
    "hidden_random": {"GPT2-XL": (48.96, 5.59, 39.96), "GPT-J": (49.03, 2.16, 31.51)},
    "hidden_random_top": {"GPT2-XL": (57.52, 4.49, 41.72), "GPT-J": (71.10, 11.36, 52.34)},
    "hidden_anchor": {"GPT2-XL": (79.47, 62.17, 45.04), "GPT-J": (89.06, 75.04, 55.59)},
}

#: Table 3: Hidden_anchor's speed-up over the full prompt, per model and task.
TABLE3: dict[str, dict[str, float]] = {
    "GPT2-XL": {"sst2": 1.1, "trec": 1.5, "agnews": 2.5, "emoc": 1.4},
    "GPT-J": {"sst2": 1.5, "trec": 2.2, "agnews": 2.9, "emoc": 1.9},
}

#: Everything above under one name (the shape ``report.PAPER`` had).
PAPER: dict[str, Any] = {
    **{k: v for k, v in CLAIMS.items() if k not in ("reweighting", "compression")},
    "reweighting": {TABLE1_ROWS[k]: v for k, v in TABLE1.items()},
    "compression": {model: {m: v[model] for m, v in TABLE2.items()} for model in ("GPT2-XL", "GPT-J")},
    "speedup": TABLE3,
}
