"""tunebench's sweep harness: which small LLM, tuned how, is the cheapest one good enough for a task.

Layers, lowest first; each imports only what its line allows (tests/test_layers.py checks it):
- core/     foundations: config schema, registry, ledger, stage store, claims, outcome, data, embedding, stats, logs:
            imports core.
- metrics/  the metric registry, the metric families and the LLM judge: imports core and metrics.
- cell/     one cell of a sweep: checks, plan, run, pipeline, models, rag, train, predict, cost, preflight: imports
            core and metrics, never board or the top.
- board/    the reading side: options, build, ranking, comparing, boards, text, terminal, Pareto plot, report, W&B
            table: imports core and metric declarations (metrics.keys), never cell.
- top       entry points (harness/*.py: __main__, task, sweep, argv_guard, leaderboard, pairwise, rescore, baseline):
            import any layer; nothing below imports them, and among them only argv_guard and task are imported.
A new file goes in the lowest layer whose imports it needs; no harness import hides inside a function.
"""

# Part of every run key: bump it when a change alters what a cell computes, so old results are not reused.
__version__ = "0.1.0"
