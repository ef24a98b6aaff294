"""The method matrix: causal, instruct, and their RAG variants, on tiny_random."""

import json

from harness.cell.models import load_model
from harness.cell.rag import retrieve_contexts
from harness.cell.train import TrainContext, fit_context, instruct_dataset
from harness.core.config import to_run_config
from harness.core.data import load_dataset, prompt_messages

METHODS = ("base", "base_rag", "causal", "causal_rag", "instruct", "instruct_rag")


def test_retrieved_context_reaches_train_and_eval_prompts(compose_cfg, tmp_path):
    cfg = to_run_config(compose_cfg("model=tiny_random", "method=instruct_rag", f"cache_dir={tmp_path}"))
    data = load_dataset(cfg.data)
    retrieved = retrieve_contexts(cfg, data, data.eval)
    contexts, report = retrieved.contexts, retrieved.report
    assert set(contexts) == {r.id for r in data.train + data.eval}
    assert report["top_k"] == 3 and report["recall_at_k"] >= 0.9 and report["chunks"] > len(data.corpus)
    record = data.eval[0]
    gold_text = data.corpus[record.source_doc_ids[0]]["text"]
    # The chunk that answers the question is among those retrieved, and the prompt carries it.
    assert record.context in gold_text and record.context[:60] in contexts[record.id]
    user = prompt_messages(record, cfg.data, cfg.model, contexts[record.id])[-1]["content"]
    assert contexts[record.id] in user and record.question in user and user.startswith("Answer using the context.")
    # RAGAS judges the chunks the prompt showed, one by one.
    shown = retrieved.chunks[record.id]
    assert set(retrieved.chunks) == {r.id for r in data.eval}
    assert 1 <= len(shown) <= 3 and all(chunk in contexts[record.id] for chunk in shown)


def test_rag_training_context_is_shortened_to_keep_the_answer(compose_cfg, tmp_path):
    cfg = to_run_config(compose_cfg("model=tiny_random", "method=instruct_rag", "qlora.max_length=400",
                                    f"cache_dir={tmp_path}"))
    data = load_dataset(cfg.data)
    contexts = retrieve_contexts(cfg, data, data.eval).contexts
    loaded = load_model(cfg.model, cfg.hardware, cfg.qlora, tmp_path)
    ctx = TrainContext(cfg, loaded, data, tmp_path, contexts)
    record = data.train[0]
    fitted = fit_context(ctx, record, contexts[record.id])
    assert 0 < len(fitted) < len(contexts[record.id]) and contexts[record.id].startswith(fitted)
    rows = instruct_dataset(ctx)
    tokenizer = loaded.tokenizer
    for row in rows.select(range(5)):
        text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        assert len(tokenizer(text, add_special_tokens=False)["input_ids"]) <= 400


def test_every_method_end_to_end(run_harness, tmp_path):
    results = tmp_path / "results"
    proc = run_harness("-m", "model=tiny_random", f"method={','.join(METHODS)}", "qlora.max_steps=2",
                       "eval.num_examples=4", "eval.max_new_tokens=8", "tracker=none", "progress=false",
                       f"cache_dir={tmp_path / 'cache'}", results_dir=results)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = {r["method"]: r for r in map(json.loads, (results / "runs.jsonl").read_text().splitlines())}
    assert set(rows) == set(METHODS) and all(r["status"] == "completed" for r in rows.values())
    for method, row in rows.items():
        trains = method not in ("base", "base_rag")
        assert bool(row["train"]) == trains and (row["adapter_dir"] is not None) == trains
        if method.endswith("_rag"):
            assert row["metrics"]["recall@3"] >= 0.75 and row["retrieval"]["chunks"] > 0
        else:
            assert "recall@3" not in row["metrics"] and row["retrieval"] == {}
    assert rows["instruct_rag"]["train"]["examples"] == 60
    assert rows["instruct_rag"]["train"]["examples_dropped_by_truncation"] == 0
    # causal trains on packed corpus blocks, not on the 60 pairs.
    assert rows["causal"]["train"]["examples"] < 60
