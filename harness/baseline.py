"""`python -m harness.baseline data=departments`: the non-LLM baseline row for a classification dataset.

TF-IDF (word 1-2 grams) + logistic regression, fit on the train split and scored on the same eval split, by
the same accuracy metric (same label set from labels.json) as the LLM cells, with the same record shape, so
the leaderboard ranks it beside them: an LLM that cannot beat it is not worth its GPU bill. Its cost is the
CPU time of fitting (as training) and of predicting (as serving: its $ per 1000 answers), priced at the hardware
preset (default `hardware=cpu`).

Takes the sweep's own overrides (data=..., data.dir=..., hardware=..., results_dir=..., eval.num_examples=...).
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from omegaconf import OmegaConf

import harness
from harness.argv_guard import UsageError, check_results_dir, compose_config
from harness.cell.cost import PeakMemory, cost_report
from harness.cell.provenance import eval_set_hash, git_sha, library_versions, now
from harness.cell.scoring import write_predictions
from harness.core.config import ConfigError, to_run_config
from harness.core.data import DataError, load_dataset
from harness.core.ledger import COMPLETED, Ledger, RunRecord, run_key
from harness.core.redact import redact
from harness.core.stats import metric_cis
from harness.metrics import score_all
from harness.metrics.classification import Accuracy

MODEL = "tfidf_logreg"
METHOD = "baseline"
log = logging.getLogger("harness.baseline")


def fit_tfidf(train_texts: Sequence[str], train_labels: Sequence[str], seed: int = 0):
    """TF-IDF (word 1-2 grams) + logistic regression, fit on train; `.predict(texts)` gives labels."""
    from sklearn.feature_extraction.text import TfidfVectorizer  # deferred, heavy: only the TF-IDF floor imports it
    from sklearn.linear_model import LogisticRegression  # deferred, heavy: only the TF-IDF floor imports it
    from sklearn.pipeline import make_pipeline  # deferred, heavy: only the TF-IDF floor imports it

    if len(train_texts) != len(train_labels):
        raise ValueError("tfidf baseline: train texts and labels differ in length")
    if len(set(train_labels)) < 2:
        raise ValueError(f"tfidf baseline: training needs two or more labels (got {sorted(set(train_labels))})")
    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(max_iter=1000, random_state=seed),
    )
    return model.fit(list(train_texts), list(train_labels))


def run_baseline(overrides: list[str]) -> RunRecord:
    composed = compose_config(overrides)
    cfg = to_run_config(composed)
    check_results_dir(Path(cfg.results_dir))
    if "accuracy" not in cfg.data.metrics:
        raise ConfigError(f"data={cfg.data.name}: the TF-IDF baseline is for classification datasets, whose "
                          f"data.metrics include accuracy (got {cfg.data.metrics})")
    dataset = load_dataset(cfg.data)
    eval_records = dataset.eval[: cfg.eval.num_examples] if cfg.eval.num_examples else dataset.eval
    train = dataset.train[: cfg.data.max_train_examples] if cfg.data.max_train_examples else dataset.train
    key_config = {"baseline": MODEL, "data": OmegaConf.to_container(composed.data, resolve=True),
                  "eval_examples": len(eval_records), "seed": cfg.qlora.seed}
    record = RunRecord(
        run_key=run_key(key_config, dataset.file_hashes, harness.__version__), run_id=uuid.uuid4().hex[:12],
        status=COMPLETED, started_at=now(), finished_at="", sweep_id="baseline", model=MODEL, method=METHOD,
        data=cfg.data.name, hardware=cfg.hardware.name, config=redact(key_config), data_hashes=dataset.file_hashes,
        versions=library_versions(), git_sha=git_sha())
    if not eval_records:
        raise ConfigError(f"data={cfg.data.name}: the eval split is empty")
    with PeakMemory("cpu") as peak:
        start = time.perf_counter()
        labels = Accuracy.from_dataset(dataset).label_set([r.answer for r in eval_records])
        model = fit_tfidf([r.question for r in train], [r.answer for r in train], seed=cfg.qlora.seed)
        fit_s = time.perf_counter() - start
        # Serving is predicting: timed on its own, so its $ per 1k answers is what this baseline costs to run.
        start = time.perf_counter()
        predicted = [str(p) for p in model.predict([r.question for r in eval_records])]
        predict_s = time.perf_counter() - start
    references = [r.answer for r in eval_records]
    scores = score_all(["accuracy"], predicted, references, dataset)
    record.metrics = dict(scores["accuracy"].values)
    record.metric_samples = len(eval_records)
    record.eval_set = eval_set_hash(eval_records)
    record.metrics_ci = metric_cis(scores, cfg.qlora.seed)
    record.cost = cost_report(cfg.hardware, load_s=0.0, train_s=fit_s, train_tokens=0, eval_s=predict_s,
                              eval_examples=len(eval_records), eval_generated_tokens=0, peak=peak,
                              adapter_dir=None).to_dict()
    # It generates no tokens: a token rate would read as "0 tok/s", i.e. infinitely slow.
    record.cost.update(eval_tokens_per_s=None, train_tokens_per_s=None)
    record.prompt = {"template_sha256": None, "first_eval_id": eval_records[0].id,
                     "first_eval_prompt": None, "note": "no prompt: TF-IDF features of the question text"}
    record.train = {"examples": len(train), "labels": labels, "train_s": fit_s}
    run_dir = Path(cfg.results_dir) / "runs" / record.run_key
    run_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"id": r.id, "question": r.question, "reference": r.answer, "prediction": p, "generated_tokens": 0,
             **{k: v[i] for k, v in scores["accuracy"].per_sample.items()}}
            for i, (r, p) in enumerate(zip(eval_records, predicted, strict=True))]
    record.predictions_file = str(write_predictions(run_dir, record.run_id, rows))
    record.finished_at = now()
    Ledger(Path(cfg.results_dir) / "runs.jsonl").append(record)
    return record


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    if {"-h", "--help"} & set(args):
        print(__doc__.strip())
        return 0
    flags = [a for a in args if a.startswith("-")]
    if flags:
        print(f"error: unknown option {flags[0]}; this command takes only key=value overrides (see --help)",
              file=sys.stderr)
        return 2
    try:
        record = run_baseline(args)
    except (ConfigError, DataError, UsageError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    values = " ".join(f"{k}={v:.3f}" for k, v in record.metrics.items())
    print(f"{MODEL} on {record.data}: {values} [{record.run_key}] (ledger: {Path(record.predictions_file).parents[2]}"
          f"/runs.jsonl)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
