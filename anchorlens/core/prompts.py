"""In-context-learning prompts with their anchor positions.

An :class:`IclPrompt` is one tokenized prompt (demonstrations then a query) that knows, per demonstration,
where its text, its formatting tokens and its label word are, and where the target (the last token, the
colon the model answers after) is. Positions come from the tokenizer's character offsets on the whole
prompt string, never from string matching, so they are right for any template, and a label word that
tokenizes differently in context than alone is refused instead of silently mislocated.

A prompt starts with the model's BOS token when the model's ``cfg.default_prepend_bos`` says so
(:func:`prepends_bos`: anchorlens loads every model without one, as the paper's prompts have none, except Gemma
3, which reads its prompts after ``<bos>``). The BOS is then position 0, a formatting position, its string
the start of ``IclPrompt.text``, and every other position is one further right.

Which demonstrations and queries a prompt set uses is :mod:`anchorlens.core.sampling`'s job; padding prompts
into batches is :mod:`anchorlens.core.batch`'s.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np

from anchorlens.core.sampling import (
    Demonstrations,
    Sampling,
    resample_demonstrations,
    sample_demonstrations,
    sample_test,
)
from anchorlens.core.tasks import Example, Task
from anchorlens.errors import AnchorlensError
from anchorlens.types import Model


@dataclass(frozen=True)
class IclPrompt:
    """One tokenized ICL prompt and its anchor positions (0-based token indices, unpadded).

    Attributes:
        tokens: Token ids of the whole prompt (the BOS first where :func:`prepends_bos`).
        text: The prompt string (starting with the BOS token's string where one is prepended, so that
            tokenizing ``text`` without special tokens gives ``tokens``).
        label: Gold class id of the query (-1 if unknown).
        demo_labels: Class id of each demonstration, in prompt order.
        label_spans: Token positions of each demonstration's label word (all sub-tokens).
        text_spans: ``(start, end)`` token range of each demonstration's input text.
        format_positions: Demonstration tokens that are neither text nor label word: the input prefix
            (``Review:``), the label prefix with its newline and colon (``\\nSentiment:``), the template
            suffix and the separator after the label; and the BOS token, where one is prepended.
        query_start: Position of the query's first token (everything before is demonstrations).
        label_token_ids: First token id of each class's label word, in class-id order; the prediction
            reads the logits of these ids at the target.
        query_text_span: ``(start, end)`` token range of the query's input text (the tokens between
            ``query_start`` and the target that are not its template); ``(0, 0)`` when unknown or empty.
    """

    tokens: tuple[int, ...]
    text: str
    label: int
    demo_labels: tuple[int, ...]
    label_spans: tuple[tuple[int, ...], ...]
    text_spans: tuple[tuple[int, int], ...]
    format_positions: tuple[int, ...]
    query_start: int
    label_token_ids: tuple[int, ...]
    query_text_span: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def target(self) -> int:
        """The target position q: the last token (the label prefix's colon)."""
        return len(self.tokens) - 1

    @property
    def label_positions(self) -> tuple[int, ...]:
        """First sub-token of each demonstration's label word (the paper's p_i), in prompt order."""
        return tuple(span[0] for span in self.label_spans)

    @property
    def n_classes(self) -> int:
        return len(self.label_token_ids)

    def class_positions(self, cls: int, all_subtokens: bool = False) -> tuple[int, ...]:
        """Label-word positions of the demonstrations of class ``cls``."""
        out: list[int] = []
        for lab, span in zip(self.demo_labels, self.label_spans, strict=True):
            if lab == cls:
                out.extend(span if all_subtokens else span[:1])
        return tuple(out)

    def text_positions(self) -> tuple[int, ...]:
        """All demonstration text positions (the non-label, non-format tokens before the query)."""
        return tuple(p for a, b in self.text_spans for p in range(a, b))


@dataclass(frozen=True)
class PromptSet(Sequence[IclPrompt]):
    """The prompts of one experiment, plus how they were made (a sequence of :class:`IclPrompt`)."""

    prompts: tuple[IclPrompt, ...]
    task: Task = field(repr=False)
    demonstrations: Demonstrations | None = field(default=None, repr=False)
    n_dropped: int = 0

    def __len__(self) -> int:
        return len(self.prompts)

    @overload
    def __getitem__(self, i: int) -> IclPrompt: ...

    @overload
    def __getitem__(self, i: slice | Sequence[int]) -> PromptSet: ...

    def __getitem__(self, i: int | slice | Sequence[int]) -> IclPrompt | PromptSet:
        """An index gives one prompt; a slice or a list of indices gives a :class:`PromptSet` with the
        same task and demonstrations (accepted wherever the full set is)."""
        if isinstance(i, int | np.integer):
            return self.prompts[int(i)]
        if isinstance(i, slice):
            picked = self.prompts[i]
        else:
            try:
                picked = tuple(self.prompts[int(j)] for j in i)
            except (TypeError, ValueError):
                raise TypeError(
                    f"PromptSet indices must be an int, a slice or a list of ints, got {i!r}"
                ) from None
        return PromptSet(picked, self.task, self.demonstrations, 0)

    def __iter__(self) -> Iterator[IclPrompt]:
        return iter(self.prompts)

    @property
    def labels(self) -> list[int]:
        return [p.label for p in self.prompts]


# --------------------------------------------------------------------------------------------------
# Tokenizer access and label words


def get_tokenizer(model_or_tokenizer: Any) -> Any:
    """The (fast) tokenizer of a HookedTransformer-like model, or the tokenizer itself."""
    tok = getattr(model_or_tokenizer, "tokenizer", None) or model_or_tokenizer
    if not getattr(tok, "is_fast", False):
        raise AnchorlensError(
            "anchorlens needs a fast (Rust) Hugging Face tokenizer with offset mapping to locate label "
            f"words; got {type(tok).__name__}. Load the model's tokenizer with use_fast=True."
        )
    return tok


def prepends_bos(model_or_tokenizer: Any) -> bool:
    """Whether prompts for this model start with its BOS token: the model's ``cfg.default_prepend_bos``
    (False for a bare tokenizer)."""
    cfg = getattr(model_or_tokenizer, "cfg", None)
    return bool(getattr(cfg, "default_prepend_bos", False))


def _encode(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def label_token_ids(task: Task, model_or_tokenizer: Any) -> tuple[int, ...]:
    """First token id of each label word (the paper's prediction rule), checked to be usable.

    Raises:
        AnchorlensError: a label word maps to the unknown token, or two label words share their first
            token (their classes could not be told apart).
    """
    tokenizer = get_tokenizer(model_or_tokenizer)
    unk = tokenizer.unk_token_id
    ids = []
    for word in task.label_words:
        toks = _encode(tokenizer, word)
        if not toks or (unk is not None and unk in toks):
            raise AnchorlensError(
                f"Label word {word!r} of task {task.name!r} is not in the model's vocabulary (it tokenizes "
                f"to {tokenizer.convert_ids_to_tokens(toks)}); choose a word the tokenizer knows."
            )
        ids.append(toks[0])
    if len(set(ids)) != len(ids):
        dup = [w for w, i in zip(task.label_words, ids, strict=True) if ids.count(i) > 1]
        raise AnchorlensError(
            f"Label words {dup} of task {task.name!r} share their first token, so their classes cannot be "
            "told apart by the first-token prediction rule; choose label words that start differently."
        )
    return tuple(ids)


# --------------------------------------------------------------------------------------------------
# Building prompts


def _check_label_tokens(tokenizer: Any, word: str, in_context: list[int]) -> None:
    """Refuse a label word that tokenizes differently inside the prompt than alone."""
    alone = _encode(tokenizer, word)
    if in_context != alone:
        raise AnchorlensError(
            f"Label word {word!r} tokenizes as {tokenizer.convert_ids_to_tokens(in_context)} inside the "
            f"prompt but as {tokenizer.convert_ids_to_tokens(alone)} alone, so its position would be "
            "wrong. Put the label word's leading space in the label word, not in the template "
            "(template '...Sentiment:{label}', label word ' Positive')."
        )


def build_prompt(
    model_or_tokenizer: Any,
    task: Task,
    demos: Sequence[Example],
    query: Example | str,
    *,
    demo_texts: bool = True,
) -> IclPrompt:
    """Tokenize one prompt and locate its anchors.

    ``demo_texts=False`` drops the demonstrations' texts and keeps their format and label lines
    (``Review:\nSentiment: Negative``): the paper's Text_anchor baseline.

    Raises:
        AnchorlensError: a demonstration's label word tokenizes differently inside the prompt than alone
            (e.g. the template ends with a space and the label word has none), or maps to ``<unk>``.
    """
    tokenizer = get_tokenizer(model_or_tokenizer)
    ids = label_token_ids(task, tokenizer)
    head, middle, suffix = task.template_parts
    q = query if isinstance(query, Example) else Example(query, -1)

    # Character spans of every piece, tagged: "t" text, "l" label word, "f" formatting.
    bos = tokenizer.bos_token if prepends_bos(model_or_tokenizer) else None
    pieces: list[tuple[str, str, int]] = [("f", bos, -1)] if bos else []  # (kind, string, demo or -1)
    for d, ex in enumerate(demos):
        body = ex.text if demo_texts else ""
        pieces += [("f", head if demo_texts else head.rstrip(), d), ("t", body, d), ("f", middle, d)]
        pieces += [("l", task.label_words[ex.label], d)]
        pieces += [("f", suffix, d), ("f", task.separator, d)]
    pieces += [("q", head, -1), ("q", q.text, -2), ("q", middle, -1)]  # -2: the query's text
    text = "".join(s for _, s, _ in pieces)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    tokens: list[int] = list(enc["input_ids"])
    offsets: list[tuple[int, int]] = [tuple(o) for o in enc["offset_mapping"]]
    if bos and tokens[:1] != [tokenizer.bos_token_id]:
        raise AnchorlensError(
            f"The model prepends BOS but its tokenizer does not read {bos!r} as the BOS token; set "
            "model.cfg.default_prepend_bos = False or use a tokenizer that knows its special tokens."
        )

    # Owner of each character: (kind, demo) of its piece. A token is the label word's if it covers a
    # non-space character of it, else text if it covers any text character, else formatting.
    owner: list[tuple[str, int]] = []
    for kind, s, d in pieces:
        owner += [("f" if kind == "l" and ch.isspace() else kind, d) for ch in s]
    n_demos = len(demos)
    label_spans: list[list[int]] = [[] for _ in range(n_demos)]
    text_pos: list[list[int]] = [[] for _ in range(n_demos)]
    fmt: list[int] = []
    query_start = len(tokens)
    query_text: list[int] = []
    for t, (a, b) in enumerate(offsets):
        kinds = [owner[c] for c in range(a, b)] or [("f", -1)]
        if any(k == "q" for k, _ in kinds):
            query_start = min(query_start, t)
            if ("q", -2) in kinds:  # as in a demonstration: a token covering any text character is text
                query_text.append(t)
            continue
        labels = {d for k, d in kinds if k == "l"}
        texts = {d for k, d in kinds if k == "t"}
        if labels:
            label_spans[labels.pop()].append(t)
        elif texts:
            text_pos[texts.pop()].append(t)
        else:
            fmt.append(t)

    for d, ex in enumerate(demos):
        _check_label_tokens(tokenizer, task.label_words[ex.label], [tokens[t] for t in label_spans[d]])
    text_spans = tuple((min(p), max(p) + 1) if p else (0, 0) for p in text_pos)
    if query_start >= len(tokens):
        raise AnchorlensError("The query tokenized to nothing; the template and query text are empty.")
    return IclPrompt(
        tokens=tuple(tokens),
        text=text,
        label=q.label,
        demo_labels=tuple(ex.label for ex in demos),
        label_spans=tuple(tuple(s) for s in label_spans),
        text_spans=text_spans,
        format_positions=tuple(fmt),
        query_start=query_start,
        label_token_ids=ids,
        query_text_span=(min(query_text), max(query_text) + 1) if query_text else (0, 0),
    )


def build_prompts(
    model: Model,
    task: Task,
    queries: Sequence[Example] | None = None,
    *,
    n: int | None = None,
    shots: int = 1,
    seed: int = 42,
    demonstrations: Demonstrations | Sequence[Example] | None = None,
    resample: bool = False,
    max_tokens: int | None = None,
    on_overflow: Literal["error", "drop"] = "error",
    shuffle_test: bool = True,
    sampling: Sampling | str = "random",
) -> PromptSet:
    """The ICL prompts of one experiment.

    Args:
        model: A HookedTransformer-like model (its ``tokenizer`` and ``cfg.n_ctx`` are used) or a tokenizer.
        task: From :func:`anchorlens.load_task`.
        queries: Query examples; default: :func:`sample_test` ``(task, n, seed)``.
        n: Number of test queries when ``queries`` is not given (default: all).
        shots: Demonstrations per class.
        seed: Seeds the demonstrations and the test sample.
        demonstrations: Fixed demonstrations to use instead of sampling.
        resample: Draw new demonstrations for every query (the paper's saliency setup).
        max_tokens: Longest allowed prompt (default: the model's context ``cfg.n_ctx``).
        on_overflow: ``"error"`` (default) or ``"drop"`` prompts longer than ``max_tokens``; dropped ones
            are counted in ``PromptSet.n_dropped`` and warned about. Never truncates.
        shuffle_test: Sample test queries in the seeded order (the paper) or file order.
        sampling: ``"random"`` (the paper) or ``"stratified"`` (as equal per class as the test split allows;
            see :func:`sample_test`).
    """
    if queries is None:
        queries = sample_test(task, n, seed, shuffle=shuffle_test, sampling=sampling)
    demo_set: Demonstrations | None
    if resample:
        per_query = resample_demonstrations(task, len(queries), shots, seed)
        demo_set = None
    else:
        if demonstrations is None:
            demo_set = sample_demonstrations(task, shots, seed)
        elif isinstance(demonstrations, Demonstrations):
            demo_set = demonstrations
        else:
            demo_set = Demonstrations(tuple(demonstrations), (), seed)
        per_query = [list(demo_set.demos)] * len(queries)
    if max_tokens is None:
        cfg = getattr(model, "cfg", None)
        max_tokens = getattr(cfg, "n_ctx", None)
    prompts = []
    dropped = 0
    for demos, q in zip(per_query, queries, strict=True):
        p = build_prompt(model, task, demos, q)
        if max_tokens is not None and len(p) > max_tokens:
            if on_overflow == "error":
                raise AnchorlensError(
                    f"A prompt has {len(p)} tokens, more than the model's context of {max_tokens}. Use fewer "
                    "shots, shorter examples, or on_overflow='drop' (CLI: --on-overflow drop) to skip such "
                    "prompts (they are counted, never truncated)."
                )
            dropped += 1
            continue
        prompts.append(p)
    if dropped:
        warnings.warn(
            f"Dropped {dropped} of {len(queries)} prompts longer than {max_tokens} tokens.", stacklevel=2
        )
    return PromptSet(tuple(prompts), task, demo_set, dropped)
