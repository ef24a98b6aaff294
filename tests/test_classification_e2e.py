"""A classification sweep through `python -m harness`: every method is asked the same question, with the label
set in the prompt, and the record shows exactly what was sent."""

import json

METHODS = ("base", "instruct")
ITEMS = {
    "Kitchen": ["cast iron frying pan", "chef knife", "ceramic mug", "bamboo cutting board", "saucepan lid",
                "silicone baking mat"],
    "Garden": ["garden hose reel", "pruning shears", "terracotta pot", "lawn mower bag", "watering can",
               "compost bin"],
    "Bathroom": ["bath towel", "shower curtain", "soap dish", "toothbrush holder", "bath mat", "shower head"],
}


def _catalog(folder):
    folder.mkdir()
    rows = [(f"{label[0]}{i}", name, label) for label, names in ITEMS.items() for i, name in enumerate(names)]
    for split, part in (("train.jsonl", [r for r in rows if int(r[0][1:]) < 4]),
                        ("eval.jsonl", [r for r in rows if int(r[0][1:]) >= 4])):
        (folder / split).write_text("".join(json.dumps({"id": i, "question": f"Product: {q}", "answer": a}) + "\n"
                                            for i, q, a in part))
    (folder / "labels.json").write_text(json.dumps({"labels": list(ITEMS)}))


def test_every_method_gets_the_same_prompt_listing_the_labels(run_harness, tmp_path):
    _catalog(tmp_path / "shop")
    results = tmp_path / "results"
    proc = run_harness("-m", "model=tiny_random", f"method={','.join(METHODS)}", "data=departments",
                       f"data.dir={tmp_path / 'shop'}", "data.name=shop", "qlora.max_steps=2", "eval.max_new_tokens=4",
                       "tracker=none", "progress=false", f"cache_dir={tmp_path / 'cache'}", results_dir=results)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    rows = {r["method"]: r for r in map(json.loads, (results / "runs.jsonl").read_text().splitlines())}
    assert set(rows) == set(METHODS)
    prompts = {m: r["prompt"] for m, r in rows.items()}
    assert prompts["base"] == prompts["instruct"]  # same template hash, same first rendered prompt
    first = prompts["base"]["first_eval_prompt"]
    assert "Kitchen, Garden, Bathroom" in first and "Product: " in first and len(prompts["base"]["template_sha256"]) == 64
    assert prompts["base"]["first_eval_id"] == "K4"
    for row in rows.values():
        assert set(row["metrics"]) == {"accuracy", "macro_f1", "unparseable_rate"}
        assert {"accuracy", "macro_f1", "unparseable_rate"} <= set(row["metrics_ci"])
