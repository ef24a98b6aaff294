"""Watching training, and stopping it when its search says so: every `qlora.eval_steps` optimizer steps the cell
answers its validation slice (harness/core/validation.py) the way evaluation answers the eval split, scores the
objective metric, reports it to its search trial through the study's storage (harness/core/study.py) and asks the
study's pruner whether to go on. A pruned cell ends with `CellPruned`, which its runner records as `pruned` with
the curve it drew; outside a search the curve is drawn and recorded all the same."""

from __future__ import annotations

import logging
import time

from transformers import TrainerCallback

from harness.cell.answering import answer
from harness.core.config import ConfigError, RunConfig
from harness.core.data import Dataset, prompt_messages
from harness.core.ledger import JUDGED_METRICS
from harness.core.precision import cell_precision
from harness.core.study import cell_trial
from harness.metrics import METRICS, score_all

log = logging.getLogger("harness")


class CellPruned(Exception):
    """Training stopped by the search's pruner: not a failure, and not a result."""

    def __init__(self, step: int, value: float, report: dict) -> None:
        super().__init__(f"pruned at step {step} (validation {report['metric']} {value:.4f}): its search judged it "
                         "not worth finishing")
        self.step, self.value, self.report = step, value, report


class TrainingWatch(TrainerCallback):
    """The cell's intermediate evaluations (`curve`: (step, value) pairs) and, for a search trial, its pruning."""

    def __init__(self, cfg: RunConfig, tokenizer, dataset: Dataset, contexts: dict[str, str] | None = None) -> None:
        self.cfg, self.tokenizer, self.dataset = cfg, tokenizer, dataset
        self.conversations = [prompt_messages(r, cfg.data, cfg.model, (contexts or {}).get(r.id), dataset.labels)
                              for r in dataset.validation]
        self.references = [r.answer for r in dataset.validation]
        self.curve: list[tuple[int, float]] = []
        self.eval_s = 0.0
        t = cfg.trial
        self.trial = cell_trial(t.study, t.storage, t.number) if t.study is not None else None
        # Outside a search without objective=..., the first figure the data's first metric produces.
        self.names = [n for n in cfg.data.metrics if n not in JUDGED_METRICS]
        if not cfg.objective and not self.names:
            raise ConfigError("qlora.eval_steps: the data's metrics are all judged; name the figure to watch, e.g. "
                              "objective=faithfulness")
        self.metric = cfg.objective or next(iter(METRICS.get(self.names[0]).keys))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.cfg.qlora.eval_steps or model is None:
            return
        value = self.evaluate(model)
        self.curve.append((state.global_step, value))
        log.info("step %d: validation %s %.4f", state.global_step, self.metric, value)
        if self.trial is None:
            return
        self.trial.report(value, state.global_step)
        if self.trial.should_prune():
            raise CellPruned(state.global_step, value, self.report())

    def evaluate(self, model) -> float:
        """The objective metric on the validation slice, answered as evaluation answers (harness.cell.answering)."""
        import torch  # deferred, heavy: only a cell that trains imports it

        start = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                predicted = answer(model, self.tokenizer, self.conversations, self.dataset.labels, self.cfg.eval,
                                   cell_precision(self.cfg), progress=False)
        finally:
            model.train(was_training)
        values = {k: v for result in score_all(self.names, predicted.predictions, self.references,
                                               self.dataset).values() for k, v in result.values.items()}
        self.eval_s += time.perf_counter() - start
        return float(values[self.metric])

    def report(self) -> dict:
        return {"metric": self.metric, "curve": [list(point) for point in self.curve], "eval_s": round(self.eval_s, 3),
                "trial": self.cfg.trial.number}


def training_watch(cfg: RunConfig, tokenizer, dataset: Dataset, contexts: dict[str, str] | None = None
                   ) -> TrainingWatch | None:
    """The cell's watch when qlora.eval_steps asks for one."""
    if cfg.qlora.eval_steps is None or not dataset.validation:
        return None
    return TrainingWatch(cfg, tokenizer, dataset, contexts)
