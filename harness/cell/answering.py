"""Answering a cell's prompts the way its settings say: greedy text, or under eval.scoring=choices the most likely
label, in the precision the cell computes in. Evaluation and the pruning watch both answer here, so a search
optimises the figure the board will show."""

from __future__ import annotations

from harness.cell.choices import score_choices
from harness.cell.predict import PredictResult, computing_in, generate
from harness.core.config import EvalConfig
from harness.core.precision import Precision


def answer(model, tokenizer, conversations: list[list[dict]], labels: list[str], eval_cfg: EvalConfig,
           precision: Precision, progress: bool) -> PredictResult:
    with computing_in(precision):
        if eval_cfg.scoring == "choices":
            return score_choices(model, tokenizer, conversations, labels, eval_cfg, progress=progress)
        return generate(model, tokenizer, conversations, eval_cfg, progress=progress)
