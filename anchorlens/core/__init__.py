"""The core every experiment stands on: models and backends, tasks, prompts and batching, hook factories,
the one batched loop with its prefix policy, key/value caches, greedy generation and the metrics.

A core module imports only other core modules (and :mod:`anchorlens.types`, :mod:`anchorlens.errors`)."""
