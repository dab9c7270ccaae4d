"""Isolation hook overhead, measured side by side in one run (ratios; machines are noisy).

- ``time_vs_unhooked``: time of the four isolation settings (label/random x first/last k layers) /
  time of four unhooked prediction passes over the same batches (target <= 1.10);
- ``deep_vs_unhooked``: time of :func:`anchorlens.experiments.deep.compute` (one forward with a capture hook on every layer) /
  one unhooked prediction pass.

Usage: ``.venv/bin/python benchmarks/isolation.py [--n 32] [--k 5]``. The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json

from _common import best_of

import anchorlens as al


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    model = al.load_model(args.model, device="cpu")
    prompts = al.build_prompts(model, al.load_task(args.task), n=args.n, shots=1, seed=42)
    ref = al.predict(model, prompts, batch_size=args.batch_size)  # also the warm-up

    def unhooked() -> None:
        for _ in range(4):
            al.predict(model, prompts, batch_size=args.batch_size)

    def hooked() -> None:
        al.isolation(model, prompts, ks=(args.k,), batch_size=args.batch_size, reference=ref)

    t_plain = best_of(unhooked, args.repeats)
    t_iso = best_of(hooked, args.repeats)
    t_one = best_of(lambda: al.predict(model, prompts, batch_size=args.batch_size), args.repeats)
    t_deep = best_of(lambda: al.deep(model, prompts, batch_size=args.batch_size), args.repeats)
    result = {
        "model": args.model,
        "n": len(prompts),
        "k": args.k,
        "isolation_s": t_iso,
        "unhooked_s": t_plain,
        "time_vs_unhooked": t_iso / t_plain,
        "deep_vs_unhooked": t_deep / t_one,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
