"""Anchors beyond classification: information flow between any named spans of any prompt, span isolation
(also during generation), and anchor discovery on the ICL tasks.

- :mod:`anchorlens.spans.prompts`: :class:`SpanPrompt` from free text (:func:`span_prompt`) or an ICL
  prompt (:func:`from_icl`);
- :mod:`anchorlens.spans.flow`: :func:`span_flow`, ``[layer, span, span]`` attention x gradient flows;
- :mod:`anchorlens.spans.generation`: :func:`isolate_span`, :func:`greedy_generate` with cuts on a cache;
- :mod:`anchorlens.spans.discovery`: :func:`discover`, tokens ranked as anchors, confirmed by isolation;
- :mod:`anchorlens.spans.render` and :mod:`anchorlens.spans.commands`: figures, HTML, the CLI bodies.
"""

from __future__ import annotations

from anchorlens.spans.discovery import AnchorRanking, discover, token_scores
from anchorlens.spans.flow import SpanFlowResult, span_flow, span_saliency_batches
from anchorlens.spans.generation import (
    SpanIsolationRun,
    greedy_generate,
    isolate_span,
    random_control,
    reference_run,
    span_isolate,
    target_scores,
)
from anchorlens.spans.prompts import SpanPrompt, from_icl, random_span, read_prompt_file, span_prompt

__all__ = [
    "AnchorRanking",
    "SpanFlowResult",
    "SpanIsolationRun",
    "SpanPrompt",
    "discover",
    "from_icl",
    "greedy_generate",
    "isolate_span",
    "random_control",
    "random_span",
    "read_prompt_file",
    "reference_run",
    "span_flow",
    "span_isolate",
    "span_prompt",
    "span_saliency_batches",
    "target_scores",
    "token_scores",
]
