"""The last steps of a cell: score its predictions (and have the judge score them), write its per-example rows,
and price what producing them cost."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

from harness.cell.context import CellContext
from harness.cell.cost import PeakMemory, cost_report
from harness.cell.produced import Produced
from harness.cell.provenance import eval_set_hash
from harness.core.ledger import JUDGED_METRICS
from harness.core.progress import progress_bar
from harness.core.redact import redact
from harness.core.stats import metric_cis
from harness.metrics import LabelScores, MetricResult, score_all
from harness.metrics.calibration import CHOICE_METRICS
from harness.metrics.ragas import JudgedSample, JudgedScores, applicable_metrics, score_ragas

log = logging.getLogger("harness")


def score(ctx: CellContext, produced: Produced) -> list[dict]:
    """Every metric of the cell's data on its predictions, with bootstrap CIs, into the record; returns the
    per-example rows, also written next to the cell's other files."""
    cfg, record = ctx.cfg, ctx.record
    references = [r.answer for r in ctx.eval_records]
    plain = [name for name in cfg.data.metrics if name not in JUDGED_METRICS]
    label_scores = None
    if produced.label_logliks is not None:  # choice scoring: its label probabilities are scored too
        label_scores = LabelScores(produced.labels, produced.label_logliks)
        plain += [name for name in CHOICE_METRICS if name not in plain]
    with progress_bar("score", total=len(plain), unit="metric", enabled=cfg.progress) as advance:
        scores = {}
        for name in plain:
            scores.update(score_all([name], produced.predictions, references, ctx.dataset, label_scores))
            advance(1)
    record.train, record.retrieval, record.prompt = produced.train, produced.retrieval, produced.prompt
    record.metrics = {k: v for result in scores.values() for k, v in result.values.items()}
    if record.retrieval.get("recall_at_k") is not None:
        record.metrics[f"recall@{cfg.retrieval.top_k}"] = record.retrieval["recall_at_k"]
    record.metric_samples = len(references)
    record.eval_set = eval_set_hash(ctx.eval_records)
    record.metrics_ci = metric_cis(scores, cfg.qlora.seed)
    judged = judge_ragas(ctx, produced) if "ragas" in cfg.data.metrics else None
    rows = _rows(ctx, produced, scores, judged, label_scores)
    record.predictions_file = str(write_predictions(ctx.run_dir, record.run_id, rows))
    record.adapter_dir = produced.adapter_dir or None
    return rows


def cell_cost(ctx: CellContext, produced: Produced) -> dict:
    """What producing the predictions cost when it ran (re-used stages keep the figures of the run that made
    them), priced at this cell's hardware preset."""
    timing = produced.timing
    peak = PeakMemory(timing.peak_device)
    peak.peak_bytes = timing.peak_bytes
    cost = cost_report(
        ctx.cfg.hardware, load_s=timing.load_s, train_s=timing.train_s, train_tokens=timing.train_tokens,
        eval_s=timing.generate_s, eval_examples=len(ctx.eval_records),
        eval_generated_tokens=sum(produced.generated_tokens), peak=peak,
        adapter_dir=Path(produced.adapter_dir) if produced.adapter_dir else None,
        train_flops_per_token=timing.train_flops_per_token, prep_s=timing.prep_s, eval_batches=timing.eval_batches,
    ).to_dict()
    cost.update(asdict(produced.model), eval_batch_size=timing.eval_batch_size, eval_oom_retries=timing.eval_oom_retries,
                precision=ctx.precision.name, precision_reason=ctx.precision.reason)
    return cost


def judge_ragas(ctx: CellContext, produced: Produced) -> JudgedScores | None:
    """RAGAS metrics by the cell's judge; without one (judge=none) they are recorded as skipped, not as 0.
    A judge that went away since the cell started fails each sample with its reason; nothing else is lost."""
    cfg, record, judge, chunks = ctx.cfg, ctx.record, ctx.judge, produced.chunks
    if judge is None:
        record.judge = {"backend": "none", "skipped": "ragas: no judge configured (judge=none)"}
        log.info("ragas metrics skipped: judge=none (set judge=ollama judge.model=NAME to score them)")
        return None
    names = applicable_metrics(cfg.judge.ragas_metrics, retrieves=chunks is not None)
    samples = [
        JudgedSample(r.id, r.question, prediction, r.answer,
                     chunks[r.id] if chunks is not None else ([r.context] if r.context else []))
        for r, prediction in zip(ctx.eval_records, produced.predictions, strict=True)
    ]
    judged = score_ragas(judge, samples, names, cfg.retrieval.embedding_model)
    record.metrics.update(judged.values)
    record.metrics_ci.update(metric_cis({"ragas": judged}, cfg.qlora.seed))
    record.judge = {**redact(judge.settings()), "metrics": judged.accounting, "judge_s": round(judged.judge_s, 3),
                    **judge.stats.to_dict()}
    for name, acc in judged.accounting.items():
        if acc["failed"]:
            log.warning("%s: judge failed on %d of %d samples (%s); they are left out of its mean, not scored 0",
                        name, acc["failed"], len(samples), ", ".join(f"{k}: {v}" for k, v in acc["reasons"].items()))
    return judged


def _rows(ctx: CellContext, produced: Produced, scores: dict[str, MetricResult],
          judged: JudgedScores | None, label_scores: LabelScores | None = None) -> list[dict]:
    rows = []
    probabilities = label_scores.probabilities() if label_scores is not None else None
    for i, (r, prediction) in enumerate(zip(ctx.eval_records, produced.predictions, strict=True)):
        row = {"id": r.id, "question": r.question, "reference": r.answer, "prediction": prediction,
               "generated_tokens": produced.generated_tokens[i], "scoring": ctx.cfg.eval.scoring}
        if label_scores is not None:
            row["label_probs"] = dict(zip(label_scores.labels, probabilities[i].round(6).tolist(), strict=True))
            row["label_logliks"] = dict(zip(label_scores.labels, label_scores.logliks[i], strict=True))
        row.update({k: v[i] for result in scores.values() for k, v in result.per_sample.items()})
        if judged is not None:
            row.update({k: v[i] for k, v in judged.per_sample.items()})
            row.update({f"{k}_error": v[i] for k, v in judged.errors.items() if v[i] is not None})
        rows.append(row)
    return rows


def write_predictions(run_dir: Path, run_id: str, rows: list[dict]) -> Path:
    """The run's per-example rows (question, reference, prediction, per-sample scores) as JSON lines."""
    path = run_dir / f"predictions-{run_id}.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path
