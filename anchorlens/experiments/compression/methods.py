"""Compression's methods (Table 2's rows), defined once for the computation, the claim and the report."""

from __future__ import annotations

#: Every method's display name, in the paper's row order.
METHOD_NAMES: dict[str, str] = {
    "full": "ICL (full prompt)",
    "text_anchor": "Text_anchor",
    "hidden_random": "Hidden_random",
    "hidden_random_top": "Hidden_random-top",
    "hidden_anchor": "Hidden_anchor",
}

#: The baselines Hidden_anchor is compared with.
BASELINES = ("text_anchor", "hidden_random", "hidden_random_top")
