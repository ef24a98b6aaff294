"""Local `evaluate` chrF module wrapping sacrebleu.CHRF, bundled so loading never touches the Hub."""

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_CITATION = """\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
    publisher = "Association for Computational Linguistics",
    url = "https://aclanthology.org/W15-3049",
    pages = "392--395",
}
"""

_DESCRIPTION = """\
Character n-gram F-score (chrF, sacrebleu.CHRF defaults) with one reference per prediction, divided by 100
(0..1 scale). Sentence chrF per prediction is returned under chrf_per_sample.
"""


class NGram(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
            codebase_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict:
        chrf = CHRF()
        return {
            "chrf": chrf.corpus_score(predictions, [references]).score / 100,
            "chrf_per_sample": [chrf.sentence_score(pred, [ref]).score / 100 for pred, ref in zip(predictions, references)],
        }
