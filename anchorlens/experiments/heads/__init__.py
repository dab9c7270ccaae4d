"""Anchors by head: per-head flows, anchor/induction/FV head scores and top-k head ablation (beyond the paper)."""
