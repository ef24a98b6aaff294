"""Read and validate a dataset folder; format its records as chat messages.

A dataset folder (what `datasets_gen` writes, and what `harness/samples/` bundles) holds:
- train.jsonl / eval.jsonl: one object a line with `id` (str, unique in the file), `question` (str),
  `answer` (str), `source_doc_ids` (list of corpus ids; may be empty) and optional `context` (str: the
  passage that supports the answer).
- corpus.jsonl: the documents, one object a line with `id`, `text` and optional `title`.
- card.json: how the set was made (recipe, model, counts); copied into every run's record.
- labels.json (classification): `{"labels": [...]}`, the label set every prompt shows and accuracy scores
  against. Without it, a `task: classification` dataset's labels are the distinct answers of train and eval.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from harness.core.config import ConfigError, DataConfig, ModelConfig, resolve_data_dir
from harness.core.errors import DataError
from harness.core.labels import LABELS_FILE, read_labels, utf8_text


@dataclass(frozen=True)
class QARecord:
    id: str
    question: str
    answer: str
    source_doc_ids: tuple[str, ...] = ()
    context: str = ""


@dataclass
class Dataset:
    name: str
    dir: Path
    train: list[QARecord]
    eval: list[QARecord]
    corpus: dict[str, dict] = field(default_factory=dict)
    card: dict = field(default_factory=dict)
    # sha256 of every file read: part of the run key, so edited data never reuses old results.
    file_hashes: dict[str, str] = field(default_factory=dict)
    # The label set of a classification dataset, in the order prompts list it (None: not classification).
    labels: list[str] | None = None
    # Things a user should hear about that do not stop the run (labels no example has): one line each.
    warnings: list[str] = field(default_factory=list)
    # Train examples held out to watch training (qlora.validation_examples; harness/core/validation.py): they are
    # no longer in `train`.
    validation: list[QARecord] = field(default_factory=list)


_QA_FIELDS = {"id": str, "question": str, "answer": str}


def load_dataset(cfg: DataConfig) -> Dataset:
    folder = resolve_data_dir(cfg)
    if not folder.is_dir():
        raise DataError(f"data.dir: dataset folder {folder} does not exist (data={cfg.name})")
    hashes: dict[str, str] = {}
    train = read_qa_file(folder / cfg.train_file, hashes)
    eval_records = read_qa_file(folder / cfg.eval_file, hashes)
    corpus = _read_corpus(folder / cfg.corpus_file, hashes)
    _check_sources(folder / cfg.train_file, train, corpus)
    _check_sources(folder / cfg.eval_file, eval_records, corpus)
    card = _read_card(folder / "card.json")
    full_train = train
    if cfg.max_train_examples is not None:
        train = train[: cfg.max_train_examples]
    if not cfg.allow_overlap:
        check_no_overlap(folder / cfg.train_file, train, folder / cfg.eval_file, eval_records)
    labels, warnings = None, []
    if (folder / LABELS_FILE).is_file():
        labels = read_labels(folder / LABELS_FILE, hashes)
        warnings += check_answers_are_labels(folder / LABELS_FILE, labels,
                                             [(folder / cfg.train_file, full_train), (folder / cfg.eval_file,
                                                                                     eval_records)])
    elif cfg.task == "classification":
        labels = sorted({r.answer.strip() for r in train + eval_records})
    return Dataset(cfg.name, folder, train, eval_records, corpus, card, hashes, labels, warnings)


def check_answers_are_labels(labels_path: Path, labels: list[str], splits: list[tuple[Path, list[QARecord]]]
                             ) -> list[str]:
    """Every answer is a label of labels.json (scoring compares them exactly, after stripping spaces): one that
    is not would be found only after the model generated. Labels no example has are a warning."""
    allowed = set(labels)
    for path, records in splits:
        outside = [r for r in records if r.answer.strip() not in allowed]
        if outside:
            first = ", ".join(f"{r.answer.strip()[:40]!r} (id {r.id!r})" for r in outside[:3])
            raise DataError(f"{path}: {len(outside)} answer(s) not in {labels_path}'s \"labels\" (first: {first}); "
                            "add them to labels.json, or correct the answers")
    used = {r.answer.strip() for _, records in splits for r in records}
    unused = [label for label in labels if label not in used]
    if not unused:
        return []
    return [f"{labels_path}: {len(unused)} label(s) no train or eval example has ({', '.join(map(repr, unused[:5]))}"
            f"{', ...' if len(unused) > 5 else ''}): prompts still offer them, but no score measures them"]


def _read_card(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        card = json.loads(utf8_text(path, path.read_bytes()))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}); "
                        "fix it or delete the card") from None
    if not isinstance(card, dict):
        raise DataError(f"{path}: expected a JSON object, got {type(card).__name__}; fix it or delete the card")
    return card


def _normal_question(text: str) -> str:
    return " ".join(text.lower().split())


def check_no_overlap(train_path: Path, train: list[QARecord], eval_path: Path, eval_records: list[QARecord]) -> None:
    """Eval examples that also appear in training (same id or same question) score memory, not skill."""
    train_ids = {r.id for r in train}
    train_questions = {_normal_question(r.question) for r in train}
    shared_ids = [r.id for r in eval_records if r.id in train_ids]
    shared_questions = [r.question for r in eval_records if _normal_question(r.question) in train_questions]
    if not shared_ids and not shared_questions:
        return
    parts = []
    if shared_ids:
        parts.append(f"{len(shared_ids)} shared id(s) (first: {', '.join(repr(i) for i in shared_ids[:3])})")
    if shared_questions:
        first = ", ".join(repr(q[:60]) for q in shared_questions[:2])
        parts.append(f"{len(shared_questions)} identical question(s) (first: {first})")
    raise DataError(f"{eval_path.name} overlaps {train_path.name} in {eval_path.parent}: {'; '.join(parts)}; "
                    "remove them from one split, or set data.allow_overlap=true to score anyway")


def check_dataset_for_run(dataset: Dataset, data: DataConfig, retrieves: bool, method: str) -> None:
    """What a cell needs from its dataset, known before any model loads."""
    if retrieves and not dataset.corpus:
        raise ConfigError(f"method={method} retrieves from the dataset's corpus, but {dataset.dir} has no "
                          f"{data.corpus_file}; use a method without _rag or add the corpus")


def _read_jsonl(path: Path, hashes: dict[str, str]) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    hashes[path.name] = hashlib.sha256(raw).hexdigest()
    rows = []
    for number, line in enumerate(utf8_text(path, raw).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}:{number}: expected a JSON object, got {type(obj).__name__}")
        rows.append((number, obj))
    if not rows:
        raise DataError(f"{path}: no records")
    return rows


def read_qa_file(path: Path, hashes: dict[str, str] | None = None) -> list[QARecord]:
    records: list[QARecord] = []
    seen: dict[str, int] = {}
    for number, obj in _read_jsonl(path, {} if hashes is None else hashes):
        where = f"{path}:{number}"
        for key, kind in _QA_FIELDS.items():
            value = obj.get(key)
            if not isinstance(value, kind) or not value.strip():
                raise DataError(f"{where}: field '{key}' must be a non-empty string (got {value!r})")
        sources = obj.get("source_doc_ids", [])
        if not isinstance(sources, list) or not all(isinstance(s, str) for s in sources):
            raise DataError(f"{where}: field 'source_doc_ids' must be a list of strings (got {sources!r})")
        context = obj.get("context", "")
        if not isinstance(context, str):
            raise DataError(f"{where}: field 'context' must be a string (got {type(context).__name__})")
        if obj["id"] in seen:
            raise DataError(f"{where}: duplicate id {obj['id']!r} (first on line {seen[obj['id']]})")
        seen[obj["id"]] = number
        records.append(QARecord(obj["id"], obj["question"], obj["answer"], tuple(sources), context))
    return records


def _read_corpus(path: Path, hashes: dict[str, str]) -> dict[str, dict]:
    if not path.is_file():
        return {}
    corpus: dict[str, dict] = {}
    for number, obj in _read_jsonl(path, hashes):
        if not isinstance(obj.get("id"), str) or not isinstance(obj.get("text"), str):
            raise DataError(f"{path}:{number}: corpus records need string fields 'id' and 'text'")
        if obj["id"] in corpus:
            raise DataError(f"{path}:{number}: duplicate corpus id {obj['id']!r}")
        corpus[obj["id"]] = obj
    return corpus


def _check_sources(path: Path, records: list[QARecord], corpus: dict[str, dict]) -> None:
    if not corpus:
        return
    for record in records:
        missing = [s for s in record.source_doc_ids if s not in corpus]
        if missing:
            raise DataError(f"{path}: record {record.id!r} cites {missing} which are not in the corpus")


def prompt_messages(record: QARecord, data: DataConfig, model: ModelConfig, context: str | None = None,
                    labels: list[str] | None = None, shots: Sequence[QARecord] = ()) -> list[dict]:
    """The conversation up to the answer; the same for training and evaluation and for every method, so all
    see one format. With a retrieved `context` (RAG methods) the user turn follows `data.rag_prompt_template`.
    `{labels}` in the system prompt or a template lists the dataset's label set (classification). `shots`
    (eval.fewshot) come first as user/assistant turns in the plain template: their own retrieved context would
    make every prompt longer without showing anything the question's own context does not."""
    template = data.prompt_template if context is None else data.rag_prompt_template
    shown = ", ".join(labels) if labels else None
    if shown is None and "{labels}" in data.system_prompt + template:
        raise DataError(f"data={data.name}: the prompt shows {{labels}}, but the dataset has no label set "
                        f"(add {LABELS_FILE} or set data.task=classification)")
    turns = []
    for shot in shots:
        turns += [{"role": "user", "content": data.prompt_template.format(question=shot.question, context="",
                                                                          labels=shown)},
                  {"role": "assistant", "content": shot.answer.strip()}]
    turns.append({"role": "user", "content": template.format(question=record.question, context=context or "",
                                                             labels=shown)})
    system = data.system_prompt.replace("{labels}", shown) if shown else data.system_prompt
    if not system:
        return turns
    if model.supports_system_role:
        return [{"role": "system", "content": system}, *turns]
    # Gemma-style templates reject a system turn: fold the instructions into the first user turn.
    return [{"role": "user", "content": f"{system}\n\n{turns[0]['content']}"}, *turns[1:]]


def fewshot_examples(train: list[QARecord], eval_records: list[QARecord], k: int, seed: int,
                     labels: list[str] | None = None) -> list[QARecord]:
    """`k` train examples to show before every question (eval.fewshot), the same for the whole cell. With a label
    set the draw is stratified: every label is shown once (in a seeded order) before any is shown twice, so eight
    shots of eight departments show each once; without one, a seeded sample. An example whose id or question is
    also in the eval split is never shown (with data.allow_overlap=true the splits may share some)."""
    if k == 0:
        return []
    eval_ids = {r.id for r in eval_records}
    eval_questions = {_normal_question(r.question) for r in eval_records}
    pool = [r for r in train if r.id not in eval_ids and _normal_question(r.question) not in eval_questions]
    if len(pool) < k:
        raise ConfigError(f"eval.fewshot={k}: only {len(pool)} train examples can be shown (none of the eval "
                          f"split's); give eval.fewshot={len(pool)} or less")
    rng = random.Random(seed)
    if not labels:
        return rng.sample(pool, k)
    by_label: dict[str, list[QARecord]] = {}
    for record in pool:
        by_label.setdefault(record.answer.strip(), []).append(record)
    for members in by_label.values():
        rng.shuffle(members)
    shown: list[QARecord] = []
    while len(shown) < k:  # one round: each label that has examples left, in a fresh seeded order
        order = [*labels, *sorted(set(by_label) - set(labels))]
        round_labels = [label for label in order if by_label.get(label)]
        rng.shuffle(round_labels)
        shown += [by_label[label].pop() for label in round_labels[: k - len(shown)]]
    return shown


def prompt_fingerprint(data: DataConfig, retrieval: bool, labels: list[str] | None) -> str:
    """sha256 of what shapes every prompt of a run besides the record: system prompt, the template the method
    uses, and the label list shown. Cells with equal fingerprints asked their questions the same way."""
    template = data.rag_prompt_template if retrieval else data.prompt_template
    payload = json.dumps({"system_prompt": data.system_prompt, "template": template, "labels": labels},
                         sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
