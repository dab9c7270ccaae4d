"""Helpers shared by the benchmarks: best-of timing, the forward+backward floors, peak memory."""

from __future__ import annotations

import ctypes
import gc
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

import anchorlens as al


def best_of(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` wall-clock runs of ``fn`` (seconds)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _loss_inputs(batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(batch.prompts[0].label_token_ids), torch.tensor([p.label for p in batch.prompts])


def plain_fwd_bwd(model: Any, batch: Any) -> None:
    """The floor: a normal forward, the label-restricted cross-entropy, ``loss.backward()`` into the
    parameters (then their gradients are dropped)."""
    ids, labels = _loss_inputs(batch)
    logits = model(batch.tokens, attention_mask=batch.attention_mask)
    rows = torch.arange(len(batch))
    loss = F.cross_entropy(logits[rows, batch.target][:, ids], labels, reduction="sum")
    loss.backward()
    model.zero_grad(set_to_none=True)


def frozen_fwd_bwd(model: Any, batch: Any) -> None:
    """Backward to the embeddings only, parameters frozen (the least any gradient method must do)."""
    ids, labels = _loss_inputs(batch)
    store: dict[str, torch.Tensor] = {}

    def leaf(x: torch.Tensor, hook: Any) -> torch.Tensor:
        x = x.detach().requires_grad_(True)
        store["x"] = x
        return x

    with al.frozen(model), model.hooks(fwd_hooks=[("hook_embed", leaf)]):
        logits = al.target_logits(model, batch)
        loss = F.cross_entropy(logits[:, ids], labels, reduction="sum")
        torch.autograd.grad(loss, [store["x"]])


def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field):
                return int(line.split()[1])
    raise RuntimeError(field)


def peak_kb(run: Callable[[], object]) -> int:
    """Peak resident memory (kB) one call of ``run`` adds, after a warm-up call (Linux ``VmHWM``).

    The memory the warm-up freed goes back to the system first (``malloc_trim``), or the measured call would
    reuse it unseen."""
    run()  # warm-up: lazy inits, optimizer state
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak to the current resident size
    before = _rss_kb("VmRSS:")
    run()
    return _rss_kb("VmHWM:") - before
