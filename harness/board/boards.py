"""What a board is made of before it is drawn: the rows of one dataset, the metrics they share, and whether
their judged metrics were scored on the same samples."""

from __future__ import annotations

from dataclasses import dataclass, field

from harness.board.ranking import Board, Bound, LeaderboardError, Verdict
from harness.core.ledger import COMPLETED

# Rows listed in a refusal before the rest is summarised.
MAX_LISTED = 6


def scoring_of(row: dict) -> tuple[str, int]:
    """How a row's answers were obtained: (eval.scoring, eval.fewshot); records from before either existed were
    generated zero-shot."""
    evaluation = (row.get("config") or {}).get("eval") or {}
    scoring = (row.get("prompt") or {}).get("scoring") or evaluation.get("scoring") or "generate"
    return str(scoring), int(evaluation.get("fewshot") or 0)


def scoring_text(row: dict) -> str:
    """`generate`, `choices`, `choices 8-shot`: what a board's scoring column shows. The TF-IDF baseline row,
    which asks no model, shows `-`."""
    if (row.get("config") or {}).get("eval") is None and not row.get("prompt"):
        return "-"
    scoring, shots = scoring_of(row)
    return scoring + (f" {shots}-shot" if shots else "")


def known_metrics(rows: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.get("metrics", {})))
    return list(names)


def judged(row: dict, metric: str) -> dict | None:
    """The judge's accounting for `metric` in this run (scored, failed, reasons, scored_set), if it judged it."""
    return (row.get("judge") or {}).get("metrics", {}).get(metric)


def sample_set(row: dict, metric: str) -> str | None:
    """Fingerprint of the samples `metric` was computed on: the judge's scored set for a judged metric, else
    the run's eval set; None for records written before fingerprints existed (not checked)."""
    counts = judged(row, metric)
    return counts["scored_set"] if counts else row.get("eval_set")


def _coverage(row: dict, metric: str) -> str:
    counts = judged(row, metric)
    if not counts:
        return f"{row.get('metric_samples', '?')} eval examples"
    text = f"{counts['scored']} of {counts['scored'] + counts['failed']} scored"
    if counts["failed"]:
        text += " (" + ", ".join(f"{k}: {v}" for k, v in counts["reasons"].items()) + ")"
    return text


def mismatched_samples(rows: list[dict], metric: str) -> list[dict]:
    """Completed rows with `metric` whose sample set differs from the most common one ([] when they agree)."""
    having = [r for r in rows if r.get("status") == COMPLETED and metric in r.get("metrics", {})
              and sample_set(r, metric) is not None]
    counts: dict[str, int] = {}
    for row in having:
        counts[sample_set(row, metric)] = counts.get(sample_set(row, metric), 0) + 1
    if len(counts) < 2:
        return []
    # The biggest group is the reference; ties go to the set with the most scored samples.
    common = max(counts, key=lambda key: (counts[key], max(_scored(r, metric) for r in having
                                                            if sample_set(r, metric) == key)))
    return [r for r in having if sample_set(r, metric) != common]


def _scored(row: dict, metric: str) -> int:
    counts = judged(row, metric)
    return counts["scored"] if counts else int(row.get("metric_samples") or 0)


def check_same_samples(rows: list[dict], metrics: list[str]) -> None:
    """Refuse to rank or pick on a metric computed on different samples in different runs: a judge that failed
    on two hard questions for one run would otherwise hand it a better mean."""
    for metric in dict.fromkeys(metrics):
        odd = mismatched_samples(rows, metric)
        if odd:
            having = [r for r in rows if r.get("status") == COMPLETED and metric in r.get("metrics", {})]
            # The differing rows first; a ledger of hundreds of runs gets a summary, not a page per run.
            shown = [r for r in having if r in odd] + [r for r in having if r not in odd]
            detail = "; ".join(f"{r.get('model')}/{r.get('method')} [{r.get('run_key')}]: {_coverage(r, metric)}"
                               + (" <- differs" if r in odd else "") for r in shown[:MAX_LISTED])
            if len(shown) > MAX_LISTED:
                detail += f"; and {len(shown) - MAX_LISTED} more runs ({len(odd)} of {len(having)} differ in all)"
            raise LeaderboardError(
                f"{metric} was computed on different samples in different runs, so their means do not compare: "
                f"{detail}. Re-score the failed samples (judge replies are cached, so only they cost anything), "
                f"filter with --sweep, or pass --allow-different-samples to rank anyway (such rows are marked *).")


@dataclass
class BoardReport:
    board: Board
    sort_by: str
    metrics: list[str]
    bounds: list[Bound]  # the bounds that apply to this board (their metric is measured here)
    header: list[str]
    body: list[list[str]]
    verdict: Verdict | None
    note: str = ""
    rows: list[dict] = field(default_factory=list)  # ranked, seeds collapsed; body shows the first len(body)

    @property
    def hidden(self) -> int:
        """Ranked rows the tables leave out (the top ones are shown unless --all-rows)."""
        return len(self.rows) - len(self.body)

    def more_rows_note(self) -> str:
        if not self.hidden:
            return ""
        return (f"{self.hidden} more rows not shown (ranked {len(self.body) + 1} to {len(self.rows)}); "
                f"--all-rows writes the full table.")

    def listed_rejections(self) -> tuple[list[tuple[dict, str]], int]:
        """The not-picked rows the report lists (those the table shows) and how many more there are."""
        if self.verdict is None:
            return [], 0
        if not self.hidden:
            return self.verdict.rejected, 0
        shown = {id(row) for row in self.rows[:len(self.body)]}
        listed = [(row, why) for row, why in self.verdict.rejected if id(row) in shown]
        return listed, len(self.verdict.rejected) - len(listed)
