"""Local `evaluate` ROUGE module wrapping rouge_score, bundled so loading never touches the Hub."""

import datasets
import evaluate
from rouge_score import rouge_scorer

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
    publisher = "Association for Computational Linguistics",
    url = "https://www.aclweb.org/anthology/W04-1013",
    pages = "74--81",
}
"""

_DESCRIPTION = """\
ROUGE-1, ROUGE-2 and ROUGE-L F-measure (rouge_score, Porter stemming), averaged over examples as HF evaluate's
rouge does with use_aggregator=False. Per-example F1 lists are returned under <key>_per_sample.
"""

_ROUGE_TYPES = ["rouge1", "rouge2", "rougeL"]


class Rouge(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict:
        scorer = rouge_scorer.RougeScorer(_ROUGE_TYPES, use_stemmer=True)
        # rouge_score takes (target, prediction); swapping them would exchange precision and recall.
        scores = [scorer.score(ref, pred) for pred, ref in zip(predictions, references)]
        out: dict = {}
        for rouge_type in _ROUGE_TYPES:
            f1 = [s[rouge_type].fmeasure for s in scores]
            out[rouge_type] = sum(f1) / len(f1)
            out[f"{rouge_type}_per_sample"] = f1
        return out
