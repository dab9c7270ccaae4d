"""Anchor re-weighting cost and memory, measured side by side in one run (ratios; machines are noisy).

- ``step_vs_fwd_bwd``: one training step (``anchorlens.experiments.reweighting.train_step``: forward with the beta hooks,
  gradient to beta, Adam update) / a plain forward+backward of the same prompt with the same loss
  (``loss.backward()`` into the parameters, the usual way; target <= 1.3);
- ``step_vs_frozen_fwd_bwd``: the same against a backward to the embeddings only, parameters frozen (the
  least any gradient through every layer must do);
- ``hooked_fwd_vs_fwd``: a no-grad forward with the beta hooks / one without (the evaluation overhead);
- ``peak_mem_vs_fwd_bwd``: peak resident memory added by one training step / added by the plain
  forward+backward, each measured in a fresh child process (``peak_mem_vs_frozen_fwd_bwd`` likewise).

The prompts are the paper's training prompts: SST-2, one demonstration per class, the auxiliary examples
as queries. Usage: ``.venv/bin/python benchmarks/reweighting.py [--batch-size 1] [--threads N]``. The last
line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

import torch
from _common import best_of, frozen_fwd_bwd, peak_kb, plain_fwd_bwd

import anchorlens as al
from anchorlens.experiments.reweighting import AnchorReweighting, train_step


def setup(args: argparse.Namespace) -> tuple[Any, AnchorReweighting, Any, torch.optim.Optimizer]:
    if args.threads:
        torch.set_num_threads(args.threads)
    model = al.load_model(args.model, device="cpu")
    task = al.load_task(args.task)
    demos = al.sample_demonstrations(task, shots=args.shots, seed=42, aux_shots=4)
    train = al.build_prompts(model, task, list(demos.aux), demonstrations=al.Demonstrations(demos.demos))
    module = AnchorReweighting.for_model(model, task, demos)
    batch = next(al.iter_batches(model, train, args.batch_size))
    optimizer = torch.optim.Adam([module.beta], lr=0.01)
    return model, module, batch, optimizer


def child(args: argparse.Namespace) -> None:
    """Peak resident memory added by one run of ``args.child`` (kB), in this fresh process."""
    model, module, batch, optimizer = setup(args)
    run = {
        "plain": lambda: plain_fwd_bwd(model, batch),
        "frozen": lambda: frozen_fwd_bwd(model, batch),
        "step": lambda: train_step(module, model, batch, optimizer),
    }
    print(json.dumps({"peak_kb": peak_kb(run[args.child])}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--task", default="sst2")
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    parser.add_argument("--child", choices=("plain", "frozen", "step"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    model, module, batch, optimizer = setup(args)
    with torch.no_grad():
        module.beta.fill_(0.1)  # any value: the cost does not depend on it

    def step() -> None:
        train_step(module, model, batch, optimizer)

    def hooked() -> None:
        with torch.no_grad():
            al.target_logits(model, batch, module.hooks(batch))

    def unhooked() -> None:
        with torch.no_grad():
            al.target_logits(model, batch)

    for fn in (step, lambda: plain_fwd_bwd(model, batch), lambda: frozen_fwd_bwd(model, batch)):
        fn()  # warm-up
    t_step = best_of(step, args.repeats)
    t_plain = best_of(lambda: plain_fwd_bwd(model, batch), args.repeats)
    t_frozen = best_of(lambda: frozen_fwd_bwd(model, batch), args.repeats)
    t_hooked = best_of(hooked, args.repeats)
    t_unhooked = best_of(unhooked, args.repeats)

    def peak(mode: str) -> int:
        cmd = [sys.executable, __file__, "--child", mode, "--model", args.model, "--task", args.task]
        cmd += [
            "--shots",
            str(args.shots),
            "--batch-size",
            str(args.batch_size),
            "--threads",
            str(args.threads),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        return int(json.loads(out)["peak_kb"])

    peak_plain, peak_frozen, peak_step = peak("plain"), peak("frozen"), peak("step")
    result = {
        "model": args.model,
        "task": args.task,
        "batch_size": len(batch),
        "batch_tokens": list(batch.tokens.shape),
        "beta_shape": list(module.beta.shape),
        "threads": torch.get_num_threads(),
        "step_s": t_step,
        "fwd_bwd_s": t_plain,
        "frozen_fwd_bwd_s": t_frozen,
        "step_vs_fwd_bwd": t_step / t_plain,
        "step_vs_frozen_fwd_bwd": t_step / t_frozen,
        "hooked_fwd_vs_fwd": t_hooked / t_unhooked,
        "peak_mem_mb_step": peak_step / 1024,
        "peak_mem_mb_fwd_bwd": peak_plain / 1024,
        "peak_mem_mb_frozen_fwd_bwd": peak_frozen / 1024,
        "peak_mem_vs_fwd_bwd": peak_step / peak_plain,
        "peak_mem_vs_frozen_fwd_bwd": peak_step / max(peak_frozen, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
