"""Local `evaluate` BLEU module wrapping sacrebleu, bundled so loading never touches the Hub."""

import datasets
import evaluate
import sacrebleu

_CITATION = """\
@inproceedings{post-2018-call,
    title = "A Call for Clarity in Reporting {BLEU} Scores",
    author = "Post, Matt",
    booktitle = "Proceedings of the Third Conference on Machine Translation: Research Papers",
    year = "2018",
    publisher = "Association for Computational Linguistics",
    url = "https://www.aclweb.org/anthology/W18-6319",
    pages = "186--191",
}
"""

_DESCRIPTION = """\
Corpus BLEU from sacrebleu.corpus_bleu with one reference per prediction, divided by 100 (0..1 scale).
Also returns sentence BLEU per prediction (sacrebleu.sentence_bleu, default smoothing) under bleu_per_sample.
"""


class Bleu(evaluate.Metric):
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
        return {
            "bleu": sacrebleu.corpus_bleu(predictions, [references]).score / 100,
            "bleu_per_sample": [
                sacrebleu.sentence_bleu(pred, [ref]).score / 100 for pred, ref in zip(predictions, references)
            ],
        }
