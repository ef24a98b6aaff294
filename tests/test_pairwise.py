"""Pairwise preference: both orders against a judge over HTTP, position bias cancelled, and the human sheet."""

import csv
import json

import pytest
from judge_double import BREAK_MARKER, JudgeDouble, overlap_ratio
from ollama_server import OllamaTestServer

from harness.pairwise import combine, export_sheet, import_sheet, load_pairs, main, parse_verdict

REFERENCES = {f"q{i}": f"Employees get {10 + i} paid vacation days per year after probation ends." for i in range(6)}
# B beats A on q0..q2 (more of the reference's words), loses on q3, ties on q4 (identical), and the judge breaks on q5.
ANSWERS_A = {"q0": "Some days.", "q1": "Vacation exists.", "q2": "Ask HR.",
             "q3": "Employees get paid vacation days per year after probation.", "q4": "Paid vacation days.",
             "q5": "Days per year."}
ANSWERS_B = {"q0": "Employees get paid vacation days.", "q1": "Paid vacation days per year.",
             "q2": "Employees get vacation days after probation.", "q3": "Vacation.", "q4": "Paid vacation days.",
             "q5": f"{BREAK_MARKER} vacation days."}


def _run(tmp_path, key, answers):
    folder = tmp_path / "runs" / key
    folder.mkdir(parents=True)
    path = folder / f"predictions-{key}.jsonl"
    path.write_text("".join(json.dumps({"id": i, "question": f"How many vacation days ({i})?",
                                        "reference": REFERENCES[i], "prediction": answers[i]}) + "\n"
                            for i in REFERENCES))
    return {"run_key": key, "run_id": key, "status": "completed", "model": "m", "method": "x",
            "predictions_file": str(path)}


@pytest.fixture
def ledger(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_run(tmp_path, "aaaa1111", ANSWERS_A)) + "\n"
                    + json.dumps(_run(tmp_path, "bbbb2222", ANSWERS_B)) + "\n")
    return path


def test_two_verdicts_combine_so_position_bias_cancels():
    assert combine("B", "A") == "win"  # B preferred in both orders
    assert combine("A", "B") == "loss"
    assert combine("A", "A") == "tie"  # the verdict followed the position, not the answer
    assert combine("B", "B") == "tie" and combine("tie", "A") == "tie"


@pytest.mark.parametrize(("reply", "verdict"), [('{"winner": "A", "reason": "x"}', "A"), ('{"winner": "b"}', "B"),
                                                ('```json\n{"winner": "tie"}\n```', "tie"),
                                                ('{"winner": "Answer B"}', "B")])
def test_verdict_parsing(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize("reply", ["B is better", '{"verdict": "A"}', '{"winner": "C"}'])
def test_unparseable_verdicts_raise(reply):
    with pytest.raises(ValueError):
        parse_verdict(reply)


def test_judge_both_orders_over_http(ledger, tmp_path, capsys):
    expected = {i: ("win" if overlap_ratio(ANSWERS_B[i], r) > overlap_ratio(ANSWERS_A[i], r) else "loss"
                    if overlap_ratio(ANSWERS_B[i], r) < overlap_ratio(ANSWERS_A[i], r) else "tie")
                for i, r in REFERENCES.items() if i != "q5"}
    assert list(expected.values()) == ["win", "win", "win", "loss", "tie"]
    double = JudgeDouble()
    with OllamaTestServer({"judge-double": double}) as srv:
        args = ["--ledger", str(ledger), "judge", "aaaa", "bbbb", "--judge-model", "judge-double",
                "--judge-url", srv.host + "/v1", "--cache-dir", str(tmp_path / "cache")]
        assert main(args) == 0
        sent = srv.requests_to("/v1/chat/completions")
        # Every non-identical pair was judged twice, once per order; identical answers (q4) are a tie unasked.
        shown_first = {r["body"]["messages"][-1]["content"].split("[Answer A]\n")[1].split("\n\n[Answer B]")[0]
                       for r in sent}
        assert len(sent) == 2 * 5 and {ANSWERS_A["q0"], ANSWERS_B["q0"]} <= shown_first
        assert main(args) == 0  # re-judging: all from the cache
        assert len(srv.requests_to("/v1/chat/completions")) == len(sent)
    out = capsys.readouterr().out
    assert "B wins 60.0%" in out and "ties 20.0%, loses 20.0% of 5 questions (3/1/1)" in out
    assert "judge position consistency: 100.0%" in out
    assert "not counted: 1 (unparseable judge output: 1): q5" in out
    saved = [json.loads(line) for line in (ledger.parent / "pairwise.jsonl").read_text().splitlines()]
    assert saved[0]["wins"] == 3 and saved[0]["failed_ids"] == ["q5"] and saved[0]["a"] == "aaaa1111"
    assert saved[0]["source"].startswith("judge ollama:judge-double@sha256:")


def test_a_judge_that_always_picks_the_first_answer_earns_only_ties(ledger, tmp_path, capsys):
    with OllamaTestServer({"first-picker": lambda body: '{"winner": "A", "reason": "first"}'}) as srv:
        assert main(["--ledger", str(ledger), "judge", "aaaa", "bbbb", "--judge-model", "first-picker",
                     "--judge-url", srv.host + "/v1", "--cache-dir", str(tmp_path / "cache")]) == 0
    out = capsys.readouterr().out
    # Six questions, all ties; only the identical pair (q4, not sent) counts as a consistent verdict.
    assert "B wins 0.0%" in out and "ties 100.0%, loses 0.0% of 6 questions" in out
    assert "position consistency: 16.7%" in out


def test_reference_side_is_the_dataset_answers(ledger):
    name_a, name_b, pairs = load_pairs(ledger, "reference", "bbbb")
    assert (name_a, name_b) == ("reference", "bbbb2222")
    assert [p.a for p in pairs] == list(REFERENCES.values()) and [p.b for p in pairs] == list(ANSWERS_B.values())


def test_human_sheet_is_blind_and_shuffled_and_imports_to_the_same_figures(ledger, tmp_path):
    name_a, name_b, pairs = load_pairs(ledger, "aaaa", "bbbb")
    sheet, page, key_file = export_sheet(name_a, name_b, pairs, tmp_path / "sheet", seed=3)
    rows = list(csv.DictReader(sheet.open()))
    text = sheet.read_text() + page.read_text()
    assert "aaaa1111" not in text and "bbbb2222" not in text  # blind: no run names for the rater
    key = json.loads(key_file.read_text())
    ids = [key["items"][row["item"]]["id"] for row in rows]
    assert sorted(ids) == sorted(REFERENCES) and ids != list(REFERENCES)  # shuffled
    sides = [key["items"][row["item"]]["answer_1"] for row in rows]
    assert {"a", "b"} == set(sides)  # both sides appear first somewhere
    for row in rows:
        assert row["answer_1"] in (ANSWERS_A[key["items"][row["item"]]["id"]], ANSWERS_B[key["items"][row["item"]]["id"]])
        assert page.read_text().count(f'data-item="{row["item"]}"') == 1
    # A rater who prefers run B on q0-q2, A on q3, calls q4 a tie and skips q5.
    wanted = {"q0": "b", "q1": "b", "q2": "b", "q3": "a", "q4": "tie", "q5": ""}
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            entry = key["items"][row["item"]]
            side = wanted[entry["id"]]
            row["choice"] = side if side in ("", "tie") else ("1" if entry["answer_1"] == side else "2")
            writer.writerow(row)
    result = import_sheet(sheet)
    assert (result.wins, result.ties, result.losses, result.failed) == (3, 1, 1, 1)
    assert result.reasons == {"not rated": 1} and result.failed_ids == ["q5"]
    assert result.a == "aaaa1111" and result.b == "bbbb2222" and result.source.startswith("human ")


def test_bad_sheet_choices_name_the_line(ledger, tmp_path, capsys):
    name_a, name_b, pairs = load_pairs(ledger, "aaaa", "bbbb")
    sheet, _, _ = export_sheet(name_a, name_b, pairs, tmp_path / "sheet")
    rows = list(csv.DictReader(sheet.open()))
    rows[1]["choice"] = "maybe"
    with sheet.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert main(["--ledger", str(ledger), "import", str(sheet)]) == 2
    assert f"{sheet}:3: choice 'maybe': use 1, 2, tie, or leave it blank" in capsys.readouterr().err
