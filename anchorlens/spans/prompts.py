"""Span prompts: free text with named spans and a target continuation, tokenized once.

A span is given as a substring (``"the cat"``, or ``{"text": "the", "occurrence": 1}`` when it repeats;
occurrences count from 0), a regular expression (``{"regex": "[0-9]+ apples", "occurrence": 0}``) or a
character range ``[start, end)``. Spans become token positions through the fast tokenizer's offset
mapping: a token belongs to a span when its characters intersect the span's characters. Spans may not
overlap, in characters or in a shared token.

The target is scored after the text: a given continuation (all its tokens; the loss is their negative
log-likelihood given the text), or the model's own greedy continuation of ``generate`` tokens. A
``contrast`` continuation turns the loss into the logit difference of the two continuations' first
tokens; ``choices`` into the cross-entropy of the first tokens restricted to the choices (the paper's
label-word loss). Text and target are tokenized separately (no special tokens) and concatenated, so the
spans stay where the text alone put them.

Two implicit spans complete every prompt: ``"target"``, the positions whose next-token predictions make
the loss (the text's last token, then the continuation's tokens but its last), and ``"rest"``, every
other unmarked token. A user span loses the text's last token to ``"target"``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from anchorlens.core.generate import greedy_generate
from anchorlens.core.prompts import IclPrompt, get_tokenizer
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model

SpanSpec = str | Mapping[str, Any] | Sequence[int]
LossKind = Literal["nll", "contrast", "choices"]
IMPLICIT = ("rest", "target")


@dataclass(frozen=True)
class SpanPrompt:
    """One tokenized span prompt (positions are 0-based token indices into ``tokens``).

    Attributes:
        text: The prompt string.
        tokens: Token ids of the text.
        names: The user's span names, in the order given.
        positions: Per user span, its token positions (sorted, never empty).
        target: Token ids of the target continuation (scored after ``tokens``).
        target_text: The continuation as a string.
        loss: ``"nll"`` (all target tokens), ``"contrast"`` or ``"choices"`` (first target token only).
        contrast: With ``loss="contrast"``, the contrast continuation's first token id.
        choices: With ``loss="choices"``, the first token id of every choice (the target's among them).
        generated: Whether ``target`` is the model's own greedy continuation.
    """

    text: str
    tokens: tuple[int, ...]
    names: tuple[str, ...]
    positions: tuple[tuple[int, ...], ...]
    target: tuple[int, ...]
    target_text: str = ""
    loss: LossKind = "nll"
    contrast: int | None = None
    choices: tuple[int, ...] = ()
    generated: bool = False

    @property
    def span_names(self) -> tuple[str, ...]:
        """All span names: the user's, then ``"rest"`` and ``"target"`` (the rows/columns of a flow)."""
        return (*self.names, *IMPLICIT)

    @property
    def run_tokens(self) -> tuple[int, ...]:
        """The tokens one forward pass runs: the text, then the target but its last token (``nll``)."""
        return self.tokens + (self.target[:-1] if self.loss == "nll" else ())

    @property
    def target_rows(self) -> tuple[int, ...]:
        """Positions whose next-token logits make the loss (the ``"target"`` span)."""
        return tuple(range(len(self.tokens) - 1, len(self.run_tokens)))

    def span_ids(self) -> tuple[int, ...]:
        """Per run position, the index of its span in :attr:`span_names`."""
        rest, target = len(self.names), len(self.names) + 1
        ids = [rest] * len(self.run_tokens)
        for s, pos in enumerate(self.positions):
            for p in pos:
                ids[p] = s
        for p in self.target_rows:
            ids[p] = target
        return tuple(ids)

    def span(self, name: str) -> tuple[int, ...]:
        """Token positions of span ``name`` (a user span, ``"rest"`` or ``"target"``)."""
        names = self.span_names
        if name not in names:
            raise AnchorlensError(f"No span {name!r}; the spans are {list(names)}.")
        s = names.index(name)
        return tuple(p for p, i in enumerate(self.span_ids()) if i == s)

    def as_icl(self) -> IclPrompt:
        """The run tokens as a demonstration-free :class:`IclPrompt` (its ``target`` is the last target
        row), so :func:`anchorlens.core.runner.forward_batches` and batch hooks see the usual ``PromptBatch``."""
        return IclPrompt(
            tokens=self.run_tokens,
            text=self.text,
            label=-1,
            demo_labels=(),
            label_spans=(),
            text_spans=(),
            format_positions=(),
            query_start=0,
            label_token_ids=(),
        )


def _occurrences(text: str, needle: str) -> list[tuple[int, int]]:
    out, i = [], text.find(needle)
    while i >= 0:
        out.append((i, i + len(needle)))
        i = text.find(needle, i + 1)
    return out


def _pick(name: str, found: list[tuple[int, int]], what: str, occurrence: Any) -> tuple[int, int]:
    if not found:
        raise AnchorlensError(f"Span {name!r}: {what} is not in the text; check its spelling and spaces.")
    if occurrence is None:
        if len(found) > 1:
            raise AnchorlensError(
                f"Span {name!r}: {what} occurs {len(found)} times (characters {found[:4]}); say which with "
                '{"text": ..., "occurrence": i} (0-based) or give a [start, end] character range.'
            )
        return found[0]
    if not isinstance(occurrence, int) or not 0 <= occurrence < len(found):
        raise AnchorlensError(
            f"Span {name!r}: occurrence {occurrence!r} of {what}, which occurs {len(found)} time(s)."
        )
    return found[occurrence]


def char_range(text: str, name: str, spec: Any) -> tuple[int, int]:
    """The ``[start, end)`` characters of one span spec (see the module docstring).

    Raises:
        AnchorlensError: a substring or regex not in the text, or repeating without an occurrence index;
            a range outside the text; a spec of another shape.
    """
    if isinstance(spec, str):
        return _pick(name, _occurrences(text, spec), repr(spec), None)
    if isinstance(spec, Mapping):
        occurrence = spec.get("occurrence")
        if "regex" in spec:
            found = [m.span() for m in re.finditer(spec["regex"], text) if m.end() > m.start()]
            return _pick(name, found, f"regex {spec['regex']!r}", occurrence)
        needle = spec.get("text", spec.get("substring"))
        if isinstance(needle, str) and needle:
            return _pick(name, _occurrences(text, needle), repr(needle), occurrence)
    if isinstance(spec, Sequence) and len(spec) == 2 and all(isinstance(x, int) for x in spec):
        a, b = int(spec[0]), int(spec[1])
        if not 0 <= a <= b <= len(text):
            raise AnchorlensError(
                f"Span {name!r}: character range [{a}, {b}) is outside the {len(text)}-character text."
            )
        return a, b
    raise AnchorlensError(
        f"Span {name!r}: give a substring, {{'text': s, 'occurrence': i}}, {{'regex': r}} or a [start, end] "
        f"character range; got {spec!r:.80}."
    )


def _token_positions(
    offsets: Sequence[tuple[int, int]], ranges: dict[str, tuple[int, int]], tokens: Sequence[str]
) -> dict[str, list[int]]:
    """Token positions per span (tokens whose characters intersect it); refuses shared tokens."""
    out: dict[str, list[int]] = {}
    owner: dict[int, str] = {}
    for name, (a, b) in ranges.items():
        out[name] = [t for t, (x, y) in enumerate(offsets) if x < b and a < y and a < b]
        for t in out[name]:
            if t in owner:
                raise AnchorlensError(
                    f"Spans {owner[t]!r} and {name!r} share the token {tokens[t]!r} (position {t}); move one "
                    "boundary to a token boundary."
                )
            owner[t] = name
    return out


def _check_overlaps(ranges: dict[str, tuple[int, int]]) -> None:
    items = sorted(ranges.items(), key=lambda kv: kv[1])
    for (n1, (a1, b1)), (n2, (a2, _)) in itertools.pairwise(items):
        if a2 < b1 and a1 < b1:
            raise AnchorlensError(
                f"Spans {n1!r} {ranges[n1]} and {n2!r} {ranges[n2]} overlap (character ranges); spans must "
                "be disjoint: shorten one, or merge them into one span."
            )


def resolve_spans(
    tokenizer: Any, text: str, spans: Mapping[str, Any]
) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]]]:
    """Tokenize ``text`` (no special tokens) and map every span to its token positions; the text's last
    token is left to the implicit ``"target"`` span.

    Raises:
        AnchorlensError: an empty text; a reserved span name (``rest``, ``target``); a bad spec (see
            :func:`char_range`); overlapping spans; a span that covers no token (but the last).
    """
    if not text:
        raise AnchorlensError("The text is empty; give the prompt text the spans are marked in.")
    bad = [n for n in spans if n in IMPLICIT or not isinstance(n, str) or not n]
    if bad:
        raise AnchorlensError(
            f"Span names {bad} are reserved or empty ({IMPLICIT} are implicit); rename them."
        )
    ranges = {name: char_range(text, name, spec) for name, spec in spans.items()}
    _check_overlaps(ranges)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tokens = tuple(int(t) for t in enc["input_ids"])
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    strings = tokenizer.convert_ids_to_tokens(list(tokens))
    found = _token_positions(offsets, ranges, strings)
    out: dict[str, tuple[int, ...]] = {}
    for name, pos in found.items():
        kept = tuple(p for p in pos if p != len(tokens) - 1)
        if not kept:
            why = "only the text's last token, which predicts the target" if pos else "no token"
            raise AnchorlensError(
                f"Span {name!r} (characters {ranges[name]}) covers {why}; widen it or drop it (the last "
                "token forms the implicit 'target' span)."
            )
        out[name] = kept
    return tokens, out


def _encode(tokenizer: Any, text: str, what: str) -> tuple[int, ...]:
    ids = tuple(int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"])
    if not ids:
        raise AnchorlensError(f"The {what} {text!r} tokenizes to nothing; give a non-empty continuation.")
    return ids


def _loss_fields(
    tokenizer: Any, target: tuple[int, ...], contrast: str | None, choices: Sequence[str] | None
) -> dict[str, Any]:
    if contrast is not None and choices is not None:
        raise AnchorlensError("Give a contrast continuation or choices, not both.")
    if contrast is not None:
        c = _encode(tokenizer, contrast, "contrast")[0]
        if c == target[0]:
            raise AnchorlensError(
                f"The contrast {contrast!r} starts with the target's first token; their logit difference is 0."
            )
        return {"loss": "contrast", "contrast": c}
    if choices is not None:
        firsts = tuple(_encode(tokenizer, c, "choice")[0] for c in choices)
        if len(set(firsts)) != len(firsts) or target[0] not in firsts:
            raise AnchorlensError(
                "The choices must start with distinct tokens, one of them the target's first token; got "
                f"{list(choices)}."
            )
        return {"loss": "choices", "choices": firsts}
    return {"loss": "nll"}


def span_prompt(
    model: Model,
    text: str,
    spans: Mapping[str, Any],
    *,
    target: str | None = None,
    generate: int | None = None,
    contrast: str | None = None,
    choices: Sequence[str] | None = None,
    max_tokens: int | None = None,
) -> SpanPrompt:
    """One :class:`SpanPrompt` (see the module docstring for span specs, target and loss).

    Args:
        model: A HookedTransformer-like model (or its fast tokenizer when ``target`` is given).
        text: The prompt text.
        spans: Span name -> substring, ``{"text"|"regex": ..., "occurrence": i}`` or ``[start, end]``.
        target: The continuation to score; ``None`` with ``generate=k``: the model's greedy ``k`` tokens.
        contrast: A contrast continuation (loss: logit difference of the first tokens).
        choices: Candidate continuations (loss: cross-entropy over their first tokens).
        max_tokens: The context to fit in (default: the model's ``cfg.n_ctx``).

    Raises:
        AnchorlensError: bad spans (see :func:`resolve_spans`); no target and no ``generate``; a target
            that does not fit in the context; a contrast or choices that cannot be told apart.
    """
    tokenizer = get_tokenizer(model)
    tokens, found = resolve_spans(tokenizer, text, spans)
    if max_tokens is None:
        max_tokens = getattr(getattr(model, "cfg", None), "n_ctx", None)
    if target is None:
        if generate is None or generate < 1:
            raise AnchorlensError("Give a target continuation, or generate=k (>= 1) for the model's own.")
        _check_fits(len(tokens), generate, max_tokens)
        ids = tuple(greedy_generate(model, tokens, generate))
        if not ids:
            raise AnchorlensError("The model ended the text at once (end-of-sequence); no target to score.")
    else:
        ids = _encode(tokenizer, target, "target")
    _check_fits(len(tokens), len(ids), max_tokens)
    return SpanPrompt(
        text=text,
        tokens=tokens,
        names=tuple(found),
        positions=tuple(found.values()),
        target=ids,
        target_text=target if target is not None else tokenizer.decode(list(ids)),
        generated=target is None,
        **_loss_fields(tokenizer, ids, contrast, choices),
    )


def _check_fits(n_text: int, n_target: int, max_tokens: int | None) -> None:
    if max_tokens is not None and n_text + n_target > max_tokens:
        raise AnchorlensError(
            f"The text ({n_text} tokens) and its target ({n_target} tokens) do not fit in the model's "
            f"{max_tokens}-token context; shorten the text or the target, or generate fewer tokens."
        )


def from_icl(model: Model, prompt: IclPrompt) -> SpanPrompt:
    """An ICL prompt as a span prompt: spans ``"text k"`` and ``"label k"`` per demonstration (the query and
    formatting tokens are ``"rest"``; its target row is the paper's target q), the gold label word's first
    token as the target and the label words as ``choices``: the loss of :func:`anchorlens.experiments.saliency.compute`.

    Raises:
        AnchorlensError: a prompt without a gold label, or a demonstration without text tokens.
    """
    if prompt.label < 0:
        raise AnchorlensError("The ICL prompt has no gold label, so its target is unknown.")
    names: list[str] = []
    positions: list[tuple[int, ...]] = []
    for k, ((a, b), span) in enumerate(zip(prompt.text_spans, prompt.label_spans, strict=True)):
        if b <= a:
            raise AnchorlensError(f"Demonstration {k} has no text tokens (built with demo_texts=False?).")
        names += [f"text {k}", f"label {k}"]
        positions += [tuple(range(a, b)), tuple(span)]
    target = prompt.label_token_ids[prompt.label]
    return SpanPrompt(
        text=prompt.text,
        tokens=prompt.tokens,
        names=tuple(names),
        positions=tuple(positions),
        target=(target,),
        target_text=get_tokenizer(model).decode([target]),
        loss="choices",
        choices=prompt.label_token_ids,
    )


def random_span(prompt: SpanPrompt, name: str, seed: int = 0) -> tuple[int, ...]:
    """A seeded random run of as many consecutive text positions as span ``name`` has, disjoint from it
    and from the target rows (it may cross other spans): the control for isolating ``name``.

    Raises:
        AnchorlensError: no such run in the text.
    """
    n = len(prompt.span(name))
    taken = set(prompt.span(name)) | set(prompt.target_rows)
    starts = [s for s in range(len(prompt.tokens) - n + 1) if not taken & set(range(s, s + n))]
    if not starts:
        raise AnchorlensError(f"No run of {n} tokens outside span {name!r} to draw a random span from.")
    start = int(np.random.default_rng(seed).choice(starts))
    return tuple(range(start, start + n))


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """The prompt records of a JSON file (one object, or a list) or a JSONL file (one object a line):
    ``{"text": ..., "spans": {...}, "target": "..." | null, "generate": k}``.

    Raises:
        AnchorlensError: unreadable JSON, no records, or records with different span names.
    """
    raw = Path(path).read_text(encoding="utf-8")
    try:
        data = json.loads(raw)
        records = data if isinstance(data, list) else [data]
    except json.JSONDecodeError:
        try:
            records = [json.loads(line) for line in raw.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise AnchorlensError(f"{path}: neither JSON nor JSONL ({e}).") from None
    if not records or not all(isinstance(r, dict) and "text" in r for r in records):
        raise AnchorlensError(f'{path}: expected objects with "text" and "spans" keys.')
    names = {tuple(r.get("spans", {})) for r in records}
    if len(names) > 1:
        raise AnchorlensError(f"{path}: all prompts need the same span names; got {sorted(names)}.")
    return records
