"""Pairwise preference: is run B's answer better than run A's, question by question?

    python -m harness.pairwise judge  RUN_A RUN_B --judge ollama --judge-model qwen2.5:14b
    python -m harness.pairwise export RUN_A RUN_B --out sheets/       # blind sheet for human raters
    python -m harness.pairwise import sheets/sheet.csv                 # their choices, same figures

RUN_A is the reference side: another run's key (or a unique prefix), or `reference` for the dataset's
reference answers (the teacher's outputs for a generated dataset). Both runs must cover the same eval ids.

The LLM judge sees every pair twice, in both orders, to cancel position bias: B wins a question only when the
judge prefers B in both orders, loses only when it prefers A in both, and anything else (a tie either time, or
the verdict following the position) is a tie. The share of questions whose two verdicts agree is reported as
the judge's position consistency. A question whose judge call failed (timeout, HTTP error, unparseable reply)
is counted with its reason and left out of the rates, never scored as a tie or a loss.

The human sheet shows, for each question, the two answers as "Answer 1" and "Answer 2" in a seeded random
order, the items themselves shuffled, with no run names; the key that undoes the blinding is written to a
separate file (`sheet.key.json`) that raters should not see. Raters fill the `choice` column with 1, 2 or tie
(or use the HTML page, which downloads the same CSV). Import turns the choices into B's win/tie/loss rates.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import html
import json
import random
import sys
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.board.compare import load_predictions, paired_rows, resolve_run, rows_by_id
from harness.board.ranking import LeaderboardError
from harness.core.config import ConfigError, JudgeBackend, JudgeConfig, load_option
from harness.core.ledger import Ledger, append_line
from harness.core.stats import bootstrap_ci
from harness.metrics.judge import Judge, failure_reason

REFERENCE = "reference"
SYSTEM = ("You are an impartial judge comparing two answers to the same question. Judge correctness against "
          "the reference answer first, then completeness and concision. Ignore the answers' order and length "
          "for their own sake.")
INSTRUCTION = ('Which answer is better? Reply with JSON only: {"winner": "A" | "B" | "tie", "reason": "<one '
               'sentence>"}.')


class PairwiseError(ValueError):
    """A user mistake (unknown run, different eval sets, bad sheet): printed without a traceback."""


@dataclass
class Pair:
    id: str
    question: str
    reference: str
    a: str
    b: str


@dataclass
class PairwiseResult:
    """B against A: B's wins, ties and losses over the questions that got a verdict."""

    a: str
    b: str
    source: str  # "judge <identity>" or "human <sheet>"
    n: int = 0  # questions with a verdict
    wins: int = 0
    ties: int = 0
    losses: int = 0
    failed: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    failed_ids: list[str] = field(default_factory=list)
    position_consistency: float | None = None  # judge only: share of questions whose two verdicts agree
    win_rate_ci: list[float] | None = None  # 95% bootstrap interval of the win rate

    @property
    def win_rate(self) -> float:
        return self.wins / self.n if self.n else 0.0

    @property
    def tie_rate(self) -> float:
        return self.ties / self.n if self.n else 0.0

    @property
    def loss_rate(self) -> float:
        return self.losses / self.n if self.n else 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "win_rate": self.win_rate, "tie_rate": self.tie_rate, "loss_rate": self.loss_rate}


def tally(a: str, b: str, source: str, outcomes: dict[str, str | None], errors: dict[str, str],
          consistency: float | None = None, seed: int = 0) -> PairwiseResult:
    """Outcomes per question id: "win" / "tie" / "loss" for B, or None with a reason in `errors`."""
    counted = Counter(o for o in outcomes.values() if o is not None)
    result = PairwiseResult(a=a, b=b, source=source, n=sum(counted.values()), wins=counted["win"],
                            ties=counted["tie"], losses=counted["loss"], failed=len(errors),
                            reasons=dict(Counter(errors.values())), failed_ids=sorted(errors),
                            position_consistency=consistency)
    if result.n:
        _, low, high = bootstrap_ci([1.0 if o == "win" else 0.0 for o in outcomes.values() if o is not None],
                                    seed=seed)
        result.win_rate_ci = [low, high]
    return result


# ---- the two sides --------------------------------------------------------------------------------------------


def load_pairs(ledger: Path, key_a: str, key_b: str) -> tuple[str, str, list[Pair]]:
    records = Ledger(ledger).records()
    if not records:
        raise PairwiseError(f"no runs in {ledger}")
    try:
        b = resolve_run(records, key_b, ledger)
        if key_a == REFERENCE:
            rows_b = rows_by_id(load_predictions(b, ledger), b)
            name_a, answers_a = REFERENCE, {i: row["reference"] for i, row in rows_b.items()}
        else:
            a = resolve_run(records, key_a, ledger)
            rows_a, rows_b = paired_rows(a, b, ledger)
            name_a, answers_a = a["run_key"], {i: row["prediction"] for i, row in rows_a.items()}
    except LeaderboardError as exc:
        raise PairwiseError(str(exc)) from None
    pairs = [Pair(i, row["question"], row["reference"], answers_a[i], row["prediction"]) for i, row in rows_b.items()]
    return name_a, b["run_key"], pairs


# ---- LLM judge ------------------------------------------------------------------------------------------------


def judge_messages(question: str, reference: str, first: str, second: str) -> list[dict]:
    user = (f"{INSTRUCTION}\n\n[Question]\n{question}\n\n[Reference answer]\n{reference}\n\n"
            f"[Answer A]\n{first}\n\n[Answer B]\n{second}")
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def parse_verdict(text: str) -> str:
    """"A", "B" or "tie" from the judge's JSON reply; ValueError for anything else."""
    try:
        reply = json.loads(text.strip().removeprefix("```json").removeprefix("```").removesuffix("```"))
        winner = str(reply["winner"]).strip().strip("\"'").lower()
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"unparseable judge reply: {text[:120]!r}") from None
    if winner in ("a", "answer a"):
        return "A"
    if winner in ("b", "answer b"):
        return "B"
    if winner in ("tie", "equal", "both", "neither"):
        return "tie"
    raise ValueError(f"judge named no winner: {winner!r}")


def combine(forward: str, backward: str) -> str:
    """B's outcome from two verdicts: forward shows (A, B), backward shows (B, A) as (A, B)."""
    if forward == "B" and backward == "A":
        return "win"
    if forward == "A" and backward == "B":
        return "loss"
    return "tie"


async def _judge_all(judge: Judge, pairs: list[Pair]) -> tuple[dict, dict, int]:
    client = judge.client()
    gate = asyncio.Semaphore(judge.cfg.concurrency)

    async def verdict(pair: Pair, first: str, second: str) -> str:
        async with gate:
            reply = await client.chat.completions.create(
                model=judge.cfg.model, messages=judge_messages(pair.question, pair.reference, first, second),
                temperature=judge.cfg.temperature, max_tokens=judge.cfg.max_tokens,
                response_format={"type": "json_object"})
        return parse_verdict(reply.choices[0].message.content or "")

    outcomes: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    agreed = 0

    async def one(pair: Pair) -> None:
        nonlocal agreed
        if pair.a == pair.b:
            outcomes[pair.id] = "tie"  # identical answers: nothing to judge
            agreed += 1
            return
        try:
            forward, backward = await asyncio.gather(verdict(pair, pair.a, pair.b), verdict(pair, pair.b, pair.a))
        except Exception as exc:  # counted per question; one bad reply must not lose the others
            outcomes[pair.id], errors[pair.id] = None, _pairwise_failure(exc)
            return
        outcome = combine(forward, backward)
        outcomes[pair.id] = outcome
        agreed += outcome != "tie" or forward == backward == "tie"  # the verdict followed the answer, not the slot

    try:
        await asyncio.gather(*(one(pair) for pair in pairs))
    finally:
        await client.close()
    return outcomes, errors, agreed


def _pairwise_failure(exc: BaseException) -> str:
    return "unparseable judge output" if isinstance(exc, ValueError) else failure_reason(exc)


def judge_pairs(judge: Judge, name_a: str, name_b: str, pairs: list[Pair], seed: int = 0) -> PairwiseResult:
    outcomes, errors, agreed = asyncio.run(_judge_all(judge, pairs))
    judged = sum(o is not None for o in outcomes.values())
    ordered = {p.id: outcomes[p.id] for p in pairs}  # input order, so the bootstrap is reproducible
    return tally(name_a, name_b, f"judge {judge.identity}", ordered, errors,
                 consistency=agreed / judged if judged else None, seed=seed)


# ---- human sheet ----------------------------------------------------------------------------------------------


def export_sheet(name_a: str, name_b: str, pairs: list[Pair], out_dir: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Write sheet.csv, sheet.html (blind, shuffled) and sheet.key.json (the unblinding key)."""
    rng = random.Random(seed)
    order = list(pairs)
    rng.shuffle(order)
    out_dir.mkdir(parents=True, exist_ok=True)
    items, key = [], {"a": name_a, "b": name_b, "seed": seed, "items": {}}
    for n, pair in enumerate(order, start=1):
        b_first = rng.random() < 0.5
        item = f"{n:04d}"
        key["items"][item] = {"id": pair.id, "answer_1": "b" if b_first else "a"}
        items.append({"item": item, "question": pair.question, "reference": pair.reference,
                      "answer_1": pair.b if b_first else pair.a, "answer_2": pair.a if b_first else pair.b,
                      "choice": ""})
    sheet, page, key_file = out_dir / "sheet.csv", out_dir / "sheet.html", out_dir / "sheet.key.json"
    with sheet.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(items[0]) if items else ["item", "choice"])
        writer.writeheader()
        writer.writerows(items)
    page.write_text(_html(items), encoding="utf-8")
    key_file.write_text(json.dumps(key, indent=1), encoding="utf-8")
    return sheet, page, key_file


def _html(items: list[dict]) -> str:
    blocks = []
    for it in items:
        name = f"c{it['item']}"
        radios = "".join(f'<label><input type="radio" name="{name}" value="{v}"> {label}</label> '
                         for v, label in (("1", "Answer 1"), ("tie", "Tie"), ("2", "Answer 2")))
        blocks.append(
            f'<section data-item="{it["item"]}"><h2>Item {it["item"]}</h2>'
            f'<p><b>Question</b><br>{html.escape(it["question"])}</p>'
            f'<p><b>Reference</b><br>{html.escape(it["reference"])}</p>'
            f'<div class="pair"><div><b>Answer 1</b><p>{html.escape(it["answer_1"])}</p></div>'
            f'<div><b>Answer 2</b><p>{html.escape(it["answer_2"])}</p></div></div><p>{radios}</p></section>')
    script = """
function download() {
  const rows = [["item", "choice"]];
  document.querySelectorAll("section").forEach(s => {
    const picked = s.querySelector("input:checked");
    rows.push([s.dataset.item, picked ? picked.value : ""]);
  });
  const blob = new Blob([rows.map(r => r.join(",")).join("\\n") + "\\n"], {type: "text/csv"});
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = "choices.csv";
  link.click();
}"""
    return ("<!doctype html><html><head><meta charset='utf-8'><title>Pairwise rating</title><style>"
            "body{font-family:sans-serif;max-width:70em;margin:auto}.pair{display:flex;gap:2em}"
            ".pair>div{flex:1;border:1px solid #ccc;padding:0 1em}section{border-bottom:2px solid #888}"
            "</style></head><body><h1>Which answer is better?</h1><p>Compare each pair against the reference; "
            "pick Tie when neither is better. Then download your choices and send back choices.csv.</p>"
            + "".join(blocks) + f"<p><button onclick='download()'>Download choices.csv</button></p>"
            f"<script>{script}</script></body></html>")


def import_sheet(sheet: Path, key_file: Path | None = None, seed: int = 0) -> PairwiseResult:
    """Human choices (a filled sheet.csv or the page's choices.csv) → B's win/tie/loss; blanks are unrated."""
    key_file = key_file or sheet.with_name("sheet.key.json")
    if not key_file.is_file():
        raise PairwiseError(f"{key_file}: the sheet's key file is missing (written by export beside sheet.csv); "
                            "pass --key PATH")
    key = json.loads(key_file.read_text(encoding="utf-8"))
    try:
        with sheet.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise PairwiseError(f"{sheet}: cannot read: {exc}") from None
    if rows and not {"item", "choice"} <= set(rows[0]):
        raise PairwiseError(f"{sheet}: needs the columns item and choice (got {', '.join(rows[0])})")
    outcomes: dict[str, str | None] = {}
    errors: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        item, choice = row["item"].strip().zfill(4), (row["choice"] or "").strip().lower()
        if item not in key["items"]:
            raise PairwiseError(f"{sheet}:{line}: item {row['item']!r} is not in {key_file}")
        entry = key["items"][item]
        if choice in ("", "skip"):
            outcomes[entry["id"]], errors[entry["id"]] = None, "not rated"
        elif choice == "tie":
            outcomes[entry["id"]] = "tie"
        elif choice in ("1", "2"):
            picked = entry["answer_1"] if choice == "1" else ("a" if entry["answer_1"] == "b" else "b")
            outcomes[entry["id"]] = "win" if picked == "b" else "loss"
        else:
            raise PairwiseError(f"{sheet}:{line}: choice {row['choice']!r}: use 1, 2, tie, or leave it blank")
    return tally(key["a"], key["b"], f"human {sheet}", outcomes, errors, seed=seed)


# ---- CLI ------------------------------------------------------------------------------------------------------


def _judge_config(args) -> JudgeConfig:
    overrides = {key: value for key, value in (("model", args.judge_model), ("base_url", args.judge_url)) if value}
    cfg = load_option("judge", args.judge, JudgeConfig, overrides)
    if cfg.backend == JudgeBackend.none:
        raise ConfigError("--judge none: pairwise judging needs a judge (--judge ollama or --judge openai)")
    return cfg


def print_result(result: PairwiseResult) -> None:
    ci = f" [95% CI {result.win_rate_ci[0]:.1%}, {result.win_rate_ci[1]:.1%}]" if result.win_rate_ci else ""
    print(f"B={result.b} against A={result.a} ({result.source})")
    print(f"  B wins {result.win_rate:.1%}{ci}, ties {result.tie_rate:.1%}, loses {result.loss_rate:.1%} "
          f"of {result.n} questions ({result.wins}/{result.ties}/{result.losses})")
    if result.position_consistency is not None:
        print(f"  judge position consistency: {result.position_consistency:.1%} (both orders gave the same verdict)")
    if result.failed:
        print(f"  not counted: {result.failed} ({', '.join(f'{k}: {v}' for k, v in result.reasons.items())}): "
              f"{', '.join(result.failed_ids[:10])}{' ...' if result.failed > 10 else ''}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m harness.pairwise", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ledger", type=Path, default=Path("results/runs.jsonl"))
    commands = parser.add_subparsers(dest="command", required=True)
    judged = commands.add_parser("judge", help="LLM judge, both orders")
    exported = commands.add_parser("export", help="blind shuffled sheet (CSV + HTML) for human raters")
    for command in (judged, exported):
        command.add_argument("run_a", help=f"reference side: a run key (prefix) or '{REFERENCE}'")
        command.add_argument("run_b", help="the run being rated: a run key (prefix)")
        command.add_argument("--seed", type=int, default=0)
    judged.add_argument("--judge", default="ollama", help="a conf/judge option: ollama, openai")
    judged.add_argument("--judge-model", default=None)
    judged.add_argument("--judge-url", default=None)
    judged.add_argument("--cache-dir", type=Path, default=Path("~/.cache/tunebench"))
    exported.add_argument("--out", type=Path, default=None, help="folder (default: results/pairwise/A_vs_B)")
    imported = commands.add_parser("import", help="human choices → win/tie/loss")
    imported.add_argument("sheet", type=Path)
    imported.add_argument("--key", type=Path, default=None, help="default: sheet.key.json beside the sheet")
    args = parser.parse_args(argv)
    results_file = args.ledger.parent / "pairwise.jsonl"
    try:
        if args.command == "import":
            result = import_sheet(args.sheet, args.key)
        else:
            name_a, name_b, pairs = load_pairs(args.ledger, args.run_a, args.run_b)
            if args.command == "export":
                out = args.out or args.ledger.parent / "pairwise" / f"{name_a}_vs_{name_b}"
                for path in export_sheet(name_a, name_b, pairs, out, args.seed):
                    print(f"written: {path}")
                print("Give raters sheet.csv or sheet.html only; keep sheet.key.json for the import.")
                return 0
            judge = Judge(_judge_config(args), args.cache_dir)
            judge.check()
            result = judge_pairs(judge, name_a, name_b, pairs, args.seed)
            print(f"  judge requests: {judge.stats.requests}, cache hits: {judge.stats.cache_hits}")
    except (PairwiseError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    append_line(results_file, json.dumps(result.to_dict(), sort_keys=True))
    print_result(result)
    print(f"appended to {results_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
