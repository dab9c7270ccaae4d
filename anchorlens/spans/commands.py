"""The bodies of ``anchorlens flow`` and ``anchorlens discover``: plain functions that write their files and
return the JSON they wrote (the CLI only parses arguments and loads the model)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from anchorlens.core.prompts import build_prompts, get_tokenizer
from anchorlens.core.tasks import Task, load_task
from anchorlens.errors import AnchorlensError
from anchorlens.render.flows import save_html
from anchorlens.spans.discovery import discover
from anchorlens.spans.flow import span_flow
from anchorlens.spans.generation import isolate_span, random_control, reference_run
from anchorlens.spans.prompts import SpanPrompt, read_prompt_file, span_prompt
from anchorlens.spans.render import plot_span_flow, span_flow_svg, span_tokens_view
from anchorlens.types import Model

DEFAULT_GENERATE = 10


def read_flow_prompts(prompt_file: str | Path) -> list[dict[str, Any]]:
    """``flow``'s prompt records (:func:`anchorlens.spans.prompts.read_prompt_file`), read before any model is
    needed, so a wrong path fails at once.

    Raises:
        AnchorlensError: the file does not exist or is a folder; unreadable JSON; records without ``text``
            or with different span names.
    """
    path = Path(prompt_file)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise AnchorlensError(
            f"Prompt file {str(path)!r} {what}. flow reads span prompts from a JSON or JSONL file: "
            '{"text": ..., "spans": {...}, "target": ... | null, "generate": k} per prompt.'
        )
    return read_prompt_file(path)


def prompts_from_records(model: Model, records: Sequence[dict[str, Any]]) -> list[SpanPrompt]:
    """Span prompts from ``flow``'s JSON records (``text``, ``spans``, ``target`` or ``generate``, optional
    ``contrast`` or ``choices``)."""
    out = []
    for i, r in enumerate(records):
        try:
            out.append(
                span_prompt(
                    model,
                    r["text"],
                    r.get("spans") or {},
                    target=r.get("target"),
                    generate=r.get("generate"),
                    contrast=r.get("contrast"),
                    choices=r.get("choices"),
                )
            )
        except AnchorlensError as e:
            raise AnchorlensError(f"Prompt {i}: {e}") from None
    return out


def _isolations(
    model: Model, prompts: Sequence[SpanPrompt], k: int, generate: int, directions: Sequence[str], seed: int
) -> tuple[list[dict[str, Any]], tuple[str, ...]]:
    ref = reference_run(model, prompts, generate, 1)
    runs: list[dict[str, Any]] = []
    kw: dict[str, Any] = dict(k=k, generate=generate, reference=ref)
    for name in prompts[0].names:
        for layers in ("first", "last"):
            for d in directions:
                runs.append(isolate_span(model, prompts, name, layers, direction=d, **kw).to_json())
                try:
                    run = random_control(model, prompts, name, seed, layers=layers, direction=d, **kw)
                    runs.append(run.to_json())
                except AnchorlensError:  # no free run of that length: no control for this span
                    continue
    return runs, ref[1]


def flow_command(
    model: Model,
    prompt_file: str | Path,
    out_dir: str | Path,
    *,
    k: int = 5,
    batch_size: int = 4,
    directions: Sequence[str] = ("into",),
    seed: int = 0,
) -> dict[str, Any]:
    """``anchorlens flow``: span flows of the prompts in ``prompt_file`` (JSON or JSONL, same span names),
    and each span isolated (``directions``) in the first and last ``k`` layers (clamped to the model's
    depth) with a random span of the same length as control; greedy continuations (the first record's
    ``generate`` tokens, default 10) of the first prompt with and without each cut.

    Writes ``flow.json`` (returned), ``flow.png`` and ``flow.html`` (offline) into ``out_dir``. ``flow``
    is the mean saliency per causal token pair from row span to column span, averaged over prompts;
    ``flow_sum`` the summed saliency. The prompt file is read first (:func:`read_flow_prompts`: a missing
    file is an :class:`~anchorlens.errors.AnchorlensError` before the model runs).
    """
    records = read_flow_prompts(prompt_file)
    prompts = prompts_from_records(model, records)
    result = span_flow(model, prompts, keep=True, batch_size=batch_size)
    generate = int(records[0].get("generate") or DEFAULT_GENERATE)
    isolation, generated = _isolations(model, prompts, k, generate, directions, seed)
    out: dict[str, Any] = {
        "spans": list(result.names),
        "n_layers": result.n_layers,
        "aggregation": "mean",
        "flow": result.flow("mean").tolist(),
        "flow_sum": result.flow("sum").tolist(),
        "target": prompts[0].target_text,
        "targets": [p.target_text for p in prompts],
        "generated": generated[0] if generated else None,
        "isolation": isolation,
        "n_prompts": len(prompts),
    }
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "flow.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    plot_span_flow(result.names, out["flow"], path=folder / "flow.png")
    matrices = result.matrices or ()
    tokens = span_tokens_view(get_tokenizer(model), prompts[0], matrices[0])
    svg = span_flow_svg(result.names, out["flow"], title=f"Span flow ({len(prompts)} prompt(s))")
    save_html(folder / "flow.html", svg, tokens, title="anchorlens span flow")
    return out


def discover_command(
    model: Model,
    task: str | Task,
    n: int,
    out_dir: str | Path,
    *,
    seed: int = 42,
    shots: int = 1,
    k: int = 5,
    confirm: int | None = None,
    batch_size: int = 4,
    progress: bool = False,
) -> dict[str, Any]:
    """``anchorlens discover``: rank the tokens of ``n`` prompts of ``task`` as anchors
    (:func:`anchorlens.spans.discover`); writes ``anchors.json`` into ``out_dir`` and returns it."""
    t = task if isinstance(task, Task) else load_task(task)
    prompts = build_prompts(model, t, n=n, shots=shots, seed=seed, on_overflow="drop")
    ranking = discover(
        model, prompts, k=k, confirm=confirm, seed=seed, batch_size=batch_size, progress=progress
    )
    out = {"task": t.name, "seed": seed, "shots": shots, **ranking.to_json()}
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "anchors.json").write_text(json.dumps(out, indent=1), encoding="utf-8")
    return out
