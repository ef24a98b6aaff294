"""Dataset files: the bundled sample is valid; malformed input names the file and line."""

import json

import pytest

from harness.core.config import DataConfig, ModelConfig, resolve_data_dir
from harness.core.data import DataError, QARecord, load_dataset, prompt_messages, read_qa_file

SAMPLE = DataConfig(name="hr_handbook", dir="samples:hr_handbook")


def test_bundled_sample_loads_with_expected_sizes():
    data = load_dataset(SAMPLE)
    assert (len(data.train), len(data.eval), len(data.corpus)) == (60, 20, 10)
    assert set(data.file_hashes) == {"train.jsonl", "eval.jsonl", "corpus.jsonl"}
    assert data.card["name"] == "hr_handbook"
    train_ids, eval_ids = {r.id for r in data.train}, {r.id for r in data.eval}
    assert not train_ids & eval_ids


def test_sample_answers_are_grounded_in_cited_documents():
    data = load_dataset(SAMPLE)
    for record in data.train + data.eval:
        assert record.source_doc_ids
        texts = [data.corpus[s]["text"] for s in record.source_doc_ids]
        for excerpt in record.context.split("\n\n"):
            assert any(excerpt in text for text in texts), record.id


def test_max_train_examples_caps_training_only():
    data = load_dataset(DataConfig(name="hr", dir="samples:hr_handbook", max_train_examples=5))
    assert (len(data.train), len(data.eval)) == (5, 20)


def _write(tmp_path, lines, name="train.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = json.dumps({"id": "a", "question": "q?", "answer": "ans", "source_doc_ids": [], "context": ""})


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"id": "b", "answer": "x"}), "field 'question'"),
        (json.dumps({"id": "b", "question": "  ", "answer": "x"}), "field 'question'"),
        (json.dumps({"id": "b", "question": "q", "answer": "x", "source_doc_ids": "doc"}), "source_doc_ids"),
        (json.dumps({"id": "a", "question": "q", "answer": "x"}), "duplicate id 'a' (first on line 1)"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line, message):
    path = _write(tmp_path, [GOOD, bad_line])
    with pytest.raises(DataError) as info:
        read_qa_file(path)
    assert f"{path}:2:" in str(info.value)
    assert message in str(info.value)


def test_missing_and_empty_files_are_named(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        read_qa_file(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="no records"):
        read_qa_file(_write(tmp_path, [""]))


def test_missing_folder_and_unknown_source_are_reported(tmp_path):
    with pytest.raises(DataError, match="data.dir"):
        load_dataset(DataConfig(name="x", dir=str(tmp_path / "absent")))
    _write(tmp_path, [json.dumps({"id": "a", "question": "q", "answer": "x", "source_doc_ids": ["ghost"]})])
    _write(tmp_path, [json.dumps({"id": "e", "question": "q", "answer": "x"})], "eval.jsonl")
    _write(tmp_path, [json.dumps({"id": "doc", "text": "t"})], "corpus.jsonl")
    with pytest.raises(DataError, match="'ghost'"):
        load_dataset(DataConfig(name="x", dir=str(tmp_path)))


def test_relative_dir_resolves_against_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir(DataConfig(name="x", dir="data/mine")) == tmp_path / "data" / "mine"


def _model(system_role: bool) -> ModelConfig:
    return ModelConfig(name="m", family="f", source="tiny_random", params_b=1.0, n_layers=1, hidden_size=8,
                       n_heads=1, n_kv_heads=1, intermediate_size=8, vocab_size=8, max_context=8,
                       lora_target_modules=["q_proj"], supports_system_role=system_role)


def test_prompt_uses_system_role_or_folds_it_into_the_user_turn():
    record = QARecord("a", "How many days?", "25.", ("leave",), "Ctx.")
    data = DataConfig(name="x", dir="d", system_prompt="Be brief.", prompt_template="Q: {question}",
                      rag_prompt_template="{context}\n{question}")
    with_role = prompt_messages(record, data, _model(True), context="Ctx.")
    assert with_role == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Ctx.\nHow many days?"}]
    folded = prompt_messages(record, data, _model(False), context="Ctx.")
    assert folded == [{"role": "user", "content": "Be brief.\n\nCtx.\nHow many days?"}]
    # Without retrieved context (non-RAG methods) the plain template applies.
    assert prompt_messages(record, data, _model(True))[1] == {"role": "user", "content": "Q: How many days?"}


def _labelled(tmp_path, labels_json: bool = True):
    folder = tmp_path / "shop"
    folder.mkdir()
    items = [("k1", "cast iron frying pan", "Kitchen"), ("k2", "chef knife", "Kitchen"),
             ("g1", "garden hose reel", "Garden"), ("g2", "pruning shears", "Garden")]
    for name, part in (("train.jsonl", items[::2]), ("eval.jsonl", items[1::2])):
        (folder / name).write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n"
                                           for i, q, a in part))
    if labels_json:
        (folder / "labels.json").write_text(json.dumps({"labels": ["Kitchen", "Garden", "Toys"]}))
    return folder


def test_classification_prompt_lists_the_label_set_for_every_method(tmp_path):
    folder = _labelled(tmp_path)
    data = DataConfig(name="shop", dir=str(folder), task="classification", metrics=["accuracy"],
                      system_prompt="Departments: {labels}. Answer with one department.",
                      rag_prompt_template="{context}\n{question}")
    dataset = load_dataset(data)
    # labels.json, in its order (Toys has no example yet is a label), and its bytes join the run key.
    assert dataset.labels == ["Kitchen", "Garden", "Toys"] and "labels.json" in dataset.file_hashes
    record = dataset.eval[0]
    plain = prompt_messages(record, data, _model(True), labels=dataset.labels)
    with_context = prompt_messages(record, data, _model(True), context="Ctx.", labels=dataset.labels)
    assert plain[0] == with_context[0] == {"role": "system",
                                           "content": "Departments: Kitchen, Garden, Toys. Answer with one department."}
    with pytest.raises(DataError, match=r"the prompt shows \{labels\}, but the dataset has no label set"):
        prompt_messages(record, data, _model(True))
    # Without labels.json, a classification set's labels are its distinct answers.
    (folder / "labels.json").unlink()
    assert load_dataset(data).labels == ["Garden", "Kitchen"]
    assert load_dataset(DataConfig(name="qa", dir=str(folder))).labels is None


def test_a_classification_config_must_show_its_labels():
    from harness.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"data.system_prompt: a classification prompt must list the allowed "
                                          r"labels: put \{labels\} in data.system_prompt"):
        DataConfig(name="shop", dir="d", task="classification", system_prompt="Answer with a department.")
    with pytest.raises(ConfigError, match="unknown placeholder"):
        DataConfig(name="shop", dir="d", prompt_template="{question} {label}")


def test_a_broken_labels_file_is_named(tmp_path):
    folder = _labelled(tmp_path)
    (folder / "labels.json").write_text('{"labels": []}')
    with pytest.raises(DataError, match=r"labels.json: \"labels\" must be a non-empty list of strings"):
        load_dataset(DataConfig(name="shop", dir=str(folder)))
