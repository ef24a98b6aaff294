"""What a cell's producing steps (load → retrieve → train → predict) leave for scoring: the predictions stage.

Stored as the predictions stage's metadata (harness/core/stages.py) and read back by any later cell with the same
predictions key, so its dictionary form is a file format: `to_dict` writes the keys stored stages have always had,
and `from_dict` reads them back.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields


@dataclass(frozen=True)
class Timing:
    """What producing the predictions cost when it ran; a re-used stage keeps the figures of the run that made it."""

    load_s: float
    # trainer.train() time of the run that trained the adapter (0 without one).
    train_s: float
    generate_s: float
    train_tokens: int
    train_flops_per_token: float | None
    # Everything from load to the last prediction that is not load, train() or generation itself, and a resumed
    # cell's earlier attempts' time before their training (their loads included).
    prep_s: float
    peak_bytes: int
    peak_device: str
    # The eval batch size generation ended with, and each out-of-memory retry that led there.
    eval_batch_size: int
    eval_oom_retries: list[dict]
    # [{seconds, examples}] per generation batch, for the cost range (cell/cost.py); a stage stored before it was
    # recorded reads back without one.
    eval_batches: list[dict] = field(default_factory=list)


@dataclass(frozen=True)
class LoadedAs:
    """How the model that generated was loaded."""

    device: str
    dtype: str
    quantized_4bit: bool


@dataclass(frozen=True)
class Produced:
    run_id: str  # the run that produced them
    predictions: list[str]
    generated_tokens: list[int]
    train: dict  # RunRecord.train of the run that trained the adapter ({} without training)
    retrieval: dict  # RunRecord.retrieval ({} without retrieval)
    chunks: dict[str, list[str]] | None  # eval record id -> the chunk texts its prompt showed (for RAGAS)
    prompt: dict  # RunRecord.prompt
    adapter_dir: str | None
    model: LoadedAs
    timing: Timing
    # eval.scoring=choices: the labels scored and each example's summed log-probability of each (None: generated).
    # Stages stored before choice scoring existed lack them, and were generated.
    labels: list[str] | None = None
    label_logliks: list[list[float]] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, meta: dict) -> Produced:
        """A stored stage's metadata (which may carry more, e.g. its `folder`); ValueError names what it lacks."""
        values = _known(cls, meta, "a predictions stage")
        values["model"] = LoadedAs(**_known(LoadedAs, meta["model"], "its model"))
        values["timing"] = Timing(**_known(Timing, meta["timing"], "its timing"))
        return cls(**values)


def _known(kind: type, meta: object, what: str) -> dict:
    names = [f.name for f in fields(kind)]
    required = [f.name for f in fields(kind) if f.default is MISSING and f.default_factory is MISSING]
    missing = [name for name in required if not isinstance(meta, dict) or name not in meta]
    if missing:
        raise ValueError(f"{what} lacks {', '.join(missing)}")
    return {name: meta[name] for name in names if name in meta}
