"""Peak memory and time of span flows on long prompts: the exact path against the lean one (issue 21).

For each length T (tokens one forward pass runs) and each path (``memory="exact"``, every layer's attention
and gradient at once; ``memory="lean"``, one layer at a time, :mod:`anchorlens.core.lean`), a fresh child
process loads the model, builds a chain-of-thought style span prompt of T tokens (a multi-step arithmetic
trace; spans: the question, the first and the last step; target: the answer) and times one
``al.span_flow(model, [p], batch_size=1, memory=path)``. Each child reports its peak resident memory
(``VmHWM``, reset after the model loads, which peaks higher than what it keeps: so the model, Python and the
run) and its resident memory before the run; one child per point, so peaks never mix. The exact path is
skipped where anchorlens refuses it (``memory="exact"``: its estimate exceeds the available memory, before
any forward pass), every path at lengths beyond the model's context, and at every length after one that
failed.

Reported: per point ``time_s``, ``peak_gb`` (process), ``run_peak_gb`` (peak minus the resident memory
before the run), ``n_ctx``; per path the growth exponents of ``peak_gb`` and ``run_peak_gb`` over T
(least-squares slope of log peak on log T over the lengths asked for from 1,024 on) and the local exponent
between the two longest lengths; ``lean_over_exact_time`` per
length both paths ran.

Usage: ``.venv/bin/python benchmarks/memory.py [--tokens 512,1024,2048,4096,8192] [--paths exact,lean]
[--wrap "flock /tmp/torch.lock"]`` (the parent imports no torch; ``--wrap`` runs each child under a
command). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import math
import random
import shlex
import subprocess
import sys
import time
from typing import Any

import anchorlens as al  # lazy: the parent process loads no torch (each child does, under --wrap)


def reasoning_text(n_steps: int, seed: int = 0) -> tuple[str, dict[str, Any], str]:
    """A multi-step arithmetic trace of ``n_steps`` steps: its text, spans and answer."""
    rng = random.Random(seed)
    x = 17
    question = "Question: A shop starts the day with 17 boxes. How many boxes does it have at closing time?"
    lines = [question, "Answer: Let's think step by step."]
    for k in range(1, n_steps + 1):
        a = rng.randint(2, 30)
        if rng.random() < 0.5 or x < a:
            line = f"Step {k}: a truck delivers {a} boxes, so the shop has {x} + {a} = {x + a} boxes."
            x += a
        else:
            line = f"Step {k}: a customer buys {a} boxes, so the shop has {x} - {a} = {x - a} boxes."
            x -= a
        lines.append(line)
    lines.append("So at closing time the shop has")
    text = "\n".join(lines)
    spans = {"question": question, "first step": lines[2], "last step": lines[-2]}
    return text, spans, f" {x}"


def long_prompt(model: Any, tokens: int) -> Any:
    """The longest reasoning span prompt of at most ``tokens`` run tokens."""
    steps, best = max(1, tokens // 30), None
    for _ in range(50):
        text, spans, answer = reasoning_text(steps)
        p = al.span_prompt(model, text, spans, target=answer, max_tokens=10**9)
        n = len(p.run_tokens)
        if n <= tokens:
            best = p
            if tokens - n < 40:
                break
        steps = max(1, steps + (tokens - n) // 32 - (1 if n > tokens else 0))
    if best is None:
        raise ValueError(f"No reasoning prompt of at most {tokens} tokens.")
    return best


def _kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def child(args: argparse.Namespace) -> None:
    """One path at one length in this fresh process: prints its JSON point (or why it was skipped)."""
    model = al.load_model(args.model, device="cpu")
    n_ctx, tokens = int(model.cfg.n_ctx), args.one_tokens
    if tokens > n_ctx:
        print(json.dumps({"tokens": tokens, "skipped": f"longer than the model's context ({n_ctx})"}))
        return
    p = long_prompt(model, tokens)
    if args.one_path == "exact":  # the library's own check, before any forward pass
        from anchorlens.core.lean import choose_memory

        try:
            choose_memory(model, [len(p.run_tokens)], batch_size=1, memory="exact")
        except al.AnchorlensError as e:
            print(json.dumps({"tokens": len(p.run_tokens), "skipped": str(e).split(". Pass")[0]}))
            return
    load_peak = _kb("VmHWM:")  # loading the model peaks above what it keeps
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # VmHWM := the current resident size, so the peak below is the run's
    before = _kb("VmRSS:")
    t0 = time.perf_counter()
    flow = al.span_flow(model, [p], batch_size=1, memory=args.one_path)
    elapsed = time.perf_counter() - t0
    peak = _kb("VmHWM:")
    mean = flow.flow("mean")
    point = {
        "tokens": len(p.run_tokens),
        "n_ctx": n_ctx,
        "time_s": round(elapsed, 2),
        "peak_gb": round(peak / 2**20, 3),
        "run_peak_gb": round((peak - before) / 2**20, 3),
        "model_load_peak_gb": round(load_peak / 2**20, 3),
        "flow_last_layer_target_from_question": float(mean[-1, p.span_names.index("target"), 0]),
    }
    print(json.dumps(point))


def slope(points: list[dict[str, Any]], key: str, start: int = 1024) -> float | None:
    """Least-squares slope of log ``key`` on log tokens (the prompt's real length) over the points asked for
    at ``start`` tokens or more (the 1k point's prompt has a little under 1,024 tokens)."""
    xs = [(math.log(p["tokens"]), math.log(p[key])) for p in points if p["requested"] >= start and p[key] > 0]
    if len(xs) < 2:
        return None
    mx, my = sum(x for x, _ in xs) / len(xs), sum(y for _, y in xs) / len(xs)
    den = sum((x - mx) ** 2 for x, _ in xs)
    return round(sum((x - mx) * (y - my) for x, y in xs) / den, 3) if den > 0 else None


def run_point(args: argparse.Namespace, path: str, tokens: int) -> dict[str, Any]:
    one = ["--model", args.model, "--one-path", path, "--one-tokens", str(tokens)]
    cmd = [*shlex.split(args.wrap), sys.executable, __file__, *one]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
    if done.returncode != 0:
        return {
            "requested": tokens,
            "tokens": tokens,
            "failed": f"exit {done.returncode}: {done.stderr.strip()[-300:]}",
        }
    return {"requested": tokens, **json.loads(done.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", default="512,1024,2048,4096,8192")
    parser.add_argument("--paths", default="exact,lean")
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--wrap", default="", help="a command to run each child under, e.g. 'flock LOCK'")
    parser.add_argument("--one-path", help=argparse.SUPPRESS)
    parser.add_argument("--one-tokens", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_path:
        return child(args)

    out: dict[str, Any] = {"model": args.model, "paths": {}}
    lengths = [int(t) for t in args.tokens.split(",")]
    for path in args.paths.split(","):
        points: list[dict[str, Any]] = []
        failed = False
        for t in lengths:
            if failed:
                points.append({"requested": t, "tokens": t, "skipped": "a shorter prompt failed"})
                continue
            point = run_point(args, path, t)
            failed = "failed" in point
            print(json.dumps({path: point}), file=sys.stderr, flush=True)
            points.append(point)
        ran = [p for p in points if "peak_gb" in p]
        out["paths"][path] = {
            "points": points,
            "peak_exponent": slope(ran, "peak_gb"),
            "run_peak_exponent": slope(ran, "run_peak_gb"),
            "peak_exponent_longest_two": slope(ran[-2:], "peak_gb", start=0),
        }
    if {"exact", "lean"} <= set(out["paths"]):
        exact = {p["tokens"]: p for p in out["paths"]["exact"]["points"] if "time_s" in p}
        lean = {p["tokens"]: p for p in out["paths"]["lean"]["points"] if "time_s" in p}
        out["lean_over_exact_time"] = {
            str(t): round(lean[t]["time_s"] / exact[t]["time_s"], 3) for t in sorted(exact) if t in lean
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
