"""results/report.html: the leaderboard as one self-contained page (no network: inline CSS, script, images).

Per board (dataset and eval set): the table (click a heading to sort), the pick and why each other row was
not picked, the Pareto plot, each run's predictions with per-example scores and judge failures, and a side by
side of two runs with the paired difference (a paired bootstrap over the eval examples, computed here with
harness/core/stats.py, the same test `--compare` uses, for every pair of the board's first runs).
"""

from __future__ import annotations

import base64
import html
import json
import re
from datetime import UTC, datetime
from pathlib import Path

from harness.board.boards import BoardReport
from harness.board.compare import CONFIDENCE, score_keys, verdict_of
from harness.board.pareto import png_bytes
from harness.board.ranking import cost_range_text
from harness.board.sources import Source
from harness.board.studies import study_fronts
from harness.board.text import legend, row_label
from harness.core.ledger import COMPLETED
from harness.core.stats import paired_bootstrap
from harness.metrics.keys import spec_of

# Runs per board paired in the side-by-side (the first ones by rank); pairs grow with the square.
MAX_PAIRED_RUNS = 10
# Examples per run embedded in the page.
MAX_EXAMPLES = 1000
BOOTSTRAP_RESAMPLES = 2000
_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?")


def write_report(reports: list[BoardReport], cost_key: str, source: Source, path: Path,
                 panels: list[bytes] | None = None, boards: list[dict] | None = None) -> Path:
    """`panels`: each board's Pareto plot as PNG bytes, when already drawn (else drawn here); `boards`: what
    board_data() gave, when already computed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(reports, cost_key, source, panels, boards), encoding="utf-8")
    return path


def board_data(reports: list[BoardReport], source: Source) -> list[dict]:
    """What the page's script shows of each board: its first runs' predictions, and the paired bootstrap of every
    pair of them (the page's costly part: the caller may draw the plot meanwhile)."""
    data = []
    for report in reports:
        runs = _runs(report, source)
        data.append({"runs": runs, "pairs": _pairs(report, runs), "order": list(runs)})
    return data


def render(reports: list[BoardReport], cost_key: str, source: Source, panels: list[bytes] | None = None,
           boards: list[dict] | None = None) -> str:
    """The page of `reports` read from `source` (which also yields each run's predictions); "cheapest" is lowest
    `cost_key`."""
    data = boards if boards is not None else board_data(reports, source)
    front = study_fronts(source.ledger_path)
    sections = [_section(index, report, cost_key, data[index]["runs"], panels[index] if panels else None, front)
                for index, report in enumerate(reports)]
    nav = "".join(f'<li><a href="#board-{i}">{_e(r.board.title)}</a></li>' for i, r in enumerate(reports))
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False, default=str).replace("</", "<\\/")
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    return (f"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>tunebench leaderboard</title><style>{CSS}</style></head><body>"
            f"<h1>tunebench leaderboard</h1>"
            f"<p class=\"meta\">Source: <code>{_e(str(source))}</code>, written {generated}. One board per dataset "
            f"and eval set: nothing is ranked, picked or compared across boards. ↑ higher is better, ↓ lower is "
            f"better. Click a column heading to sort. Cheapest means lowest <code>{_e(cost_key)}</code>.</p>"
            f"<ul class=\"nav\">{nav}</ul>{''.join(sections)}"
            f"<script type=\"application/json\" id=\"report-data\">{payload}</script>"
            f"<script>{SCRIPT}</script></body></html>\n")


def _e(text) -> str:
    return html.escape(str(text), quote=True)


TEXT_COLUMNS = ("model", "method", "status", "run keys")


def _sort_value(cell: str, column: str) -> str:
    """What a cell sorts by: its first number ($0.00012 -> 0.00012) in a figure column, else its text; '-' sorts
    last."""
    if cell.strip() in ("-", ""):
        return ""
    if column in TEXT_COLUMNS:
        return cell.lower()
    match = _NUMBER.search(cell.replace(",", ""))
    return match.group(0) if match else cell.lower()


def _section(index: int, report: BoardReport, cost_key: str, runs: dict, panel: bytes | None = None,
             front: dict[str, str] | None = None) -> str:
    pick = report.verdict.pick if report.verdict is not None else None
    head = "".join(f'<th data-col="{i}" title="click to sort">{_e(name)}</th>' for i, name in enumerate(report.header))
    body = []
    for row, cells in zip(report.rows[:len(report.body)], report.body, strict=True):
        picked = row is pick
        tds = "".join(f'<td data-sort="{_e(_sort_value(c, name))}">{_e(c)}</td>'
                      for c, name in zip(cells, report.header, strict=True))
        study = (front or {}).get(row.get("run_key"))
        classes = ("pick" if picked else str(row.get("status"))) + (" front" if study else "")
        title = f' title="on the front of search study {_e(study)}"' if study else ""
        body.append(f'<tr data-run="{_e(row.get("run_key"))}" class="{classes}"{title}>'
                    f"{tds}</tr>")
    parts = [f'<section class="board" id="board-{index}"><h2>{_e(report.board.title)}</h2>',
             f"<p>Ranked by <code>{_e(report.sort_by)}</code>. {_e(legend(report.metrics)).replace('`', '')}.</p>"]
    if report.note:
        parts.append(f'<p class="note">{_e(report.note)}</p>')
    if report.verdict is not None:
        wanted = ", ".join(b.text() for b in report.bounds)
        if pick is not None:
            parts.append(f'<div class="verdict ok" id="pick-{index}">Cheapest adequate ({_e(wanted)}): '
                         f"<b>{_e(row_label(pick))}</b> at {_e(cost_range_text(pick, cost_key))} ({_e(cost_key)})"
                         f"{'. ' + _e(report.verdict.tie_note) if report.verdict.tie_note else ''}</div>")
            if report.verdict.caution:
                parts.append(f'<div class="verdict caution">Caution: {_e(report.verdict.caution)}.</div>')
        else:
            parts.append(f'<div class="verdict none" id="pick-{index}">No completed run meets every bound '
                         f"({_e(wanted)}).</div>")
    else:
        parts.append('<div class="verdict none">No bounds given (--min / --max), so no pick.</div>')
    parts.append(f'<div class="scroll"><table class="board-table" id="table-{index}"><thead><tr>{head}</tr></thead>'
                 f"<tbody>{''.join(body)}</tbody></table></div>")
    if report.hidden:
        parts.append(f'<p class="note more-rows">{_e(report.more_rows_note())}</p>')
    listed, more = report.listed_rejections()
    if listed or more:
        reasons = "".join(f"<li>{_e(row_label(row))}: {_e(reason)}</li>" for row, reason in listed)
        reasons += f"<li>and {more} more rows below the table</li>" if more else ""
        parts.append(f"<h3>Why the others were not picked</h3><ul class=\"reasons\">{reasons}</ul>")
    if any(row.get("status") == COMPLETED for row in report.rows):
        png = base64.b64encode(panel or png_bytes([report], cost_key, front)).decode()
        parts.append(f'<h3>Quality against cost</h3><img class="pareto" alt="Pareto plot of '
                     f'{_e(report.board.title)}" src="data:image/png;base64,{png}">')
    else:  # a board of failures only (they have no eval set): nothing to place, and a plot costs a second
        parts.append("<h3>Quality against cost</h3><p>no completed run to plot</p>")
    parts.append(_drilldown(report, runs))
    parts.append(_side_by_side(index, runs))
    parts.append("</section>")
    return "".join(parts)


def _runs(report, source) -> dict:
    """run key -> what the page shows of a completed row: label, the examples it was scored on, judge failures."""
    out = {}
    for row in report.rows[:len(report.body)]:  # the rows the table shows: a board can rank thousands
        if row.get("status") != COMPLETED:
            continue
        examples = source.predictions(row)
        judge = {name: {k: v for k, v in counts.items() if k in ("scored", "failed", "reasons")}
                 for name, counts in ((row.get("judge") or {}).get("metrics") or {}).items()}
        out[str(row.get("run_key"))] = {
            "label": row_label(row),
            "seeds": len(row.get("seeds") or [None]),
            "examples": None if examples is None else [_clean(e) for e in examples[:MAX_EXAMPLES]],
            "truncated": examples is not None and len(examples) > MAX_EXAMPLES,
            "judge": judge,
        }
    return out


def _clean(example: dict) -> dict:
    """JSON-safe: a NaN score becomes null (shown as not scored)."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in example.items()}


def _pairs(report, runs: dict) -> dict:
    """'A|B' -> {metric: paired bootstrap of B - A, verdict, direction} for the board's first runs."""
    keys = [k for k in runs if runs[k]["examples"]][:MAX_PAIRED_RUNS]
    out = {}
    for i, key_a in enumerate(keys):
        for key_b in keys[i + 1:]:
            rows_a = {e.get("id"): e for e in runs[key_a]["examples"]}
            rows_b = {e.get("id"): e for e in runs[key_b]["examples"]}
            if rows_a.keys() != rows_b.keys():
                continue
            results = {}
            for metric in score_keys(rows_a, rows_b):
                spec = spec_of(metric)
                both = [i for i in rows_a if _num(rows_a[i].get(metric)) and _num(rows_b[i].get(metric))]
                if spec is None or not both:
                    continue
                result = paired_bootstrap([rows_a[i][metric] for i in both], [rows_b[i][metric] for i in both],
                                          n_resamples=BOOTSTRAP_RESAMPLES, confidence=CONFIDENCE)
                result["higher_is_better"] = spec.higher_is_better
                result["verdict"] = verdict_of(result)
                result["scored_both"] = len(both)
                result["examples"] = len(rows_a)
                results[metric] = result
            out[f"{key_a}|{key_b}"] = results
    return out


def _num(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _drilldown(report, runs: dict) -> str:
    items = []
    for key, run in runs.items():
        if run["examples"] is None:
            items.append(f"<details><summary>{_e(run['label'])}</summary><p>predictions not available from this "
                         f"source</p></details>")
            continue
        columns = list(dict.fromkeys(c for e in run["examples"] for c in e))
        fixed = [c for c in ("id", "question", "reference", "prediction") if c in columns]
        errors = [c for c in columns if c.endswith("_error")]
        scores = [c for c in columns if c not in fixed and c not in errors and c != "generated_tokens"]
        head = "".join(f"<th>{_e(c)}</th>" for c in [*fixed, *scores]) + "<th>judge failures</th>"
        rows = []
        for example in run["examples"]:
            cells = "".join(f"<td class=\"text\">{_e(example.get(c, ''))}</td>" for c in fixed)
            cells += "".join(f"<td>{_fmt_score(example.get(c))}</td>" for c in scores)
            failures = "; ".join(f"{c.removesuffix('_error')}: {example[c]}" for c in errors if example.get(c))
            cells += f"<td class=\"fail\">{_e(failures)}</td>"
            rows.append(f"<tr>{cells}</tr>")
        judged = "; ".join(f"{name}: {c.get('scored')} scored, {c.get('failed')} failed"
                           + (f" ({', '.join(f'{k}: {v}' for k, v in (c.get('reasons') or {}).items())})"
                              if c.get("failed") else "") for name, c in run["judge"].items())
        seeds = f" (examples of its first seed of {run['seeds']})" if run["seeds"] > 1 else ""
        more = f" First {MAX_EXAMPLES} examples shown." if run["truncated"] else ""
        items.append(f'<details class="run" data-run="{_e(key)}"><summary>{_e(run["label"])}{_e(seeds)}</summary>'
                     f"<p>{_e(judged or 'no LLM judge on this run')}.{_e(more)}</p>"
                     f'<table class="examples"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
                     f"</table></details>")
    return "<h3>Predictions, per example</h3>" + ("".join(items) or "<p>no completed run</p>")


def _fmt_score(value) -> str:
    if value is None:
        return '<span class="na">not scored</span>'
    return _e(f"{value:.4f}" if isinstance(value, float) else value)


def _side_by_side(index: int, runs: dict) -> str:
    keys = [k for k in runs if runs[k]["examples"]][:MAX_PAIRED_RUNS]
    if len(keys) < 2:
        return "<h3>Side by side</h3><p>fewer than two runs with predictions on this board</p>"
    options = "".join(f'<option value="{_e(k)}">{_e(runs[k]["label"])}</option>' for k in keys)
    return (f'<h3>Side by side</h3><div class="pair" data-board="{index}">'
            f'<label>A <select class="pick-a">{options}</select></label> '
            f'<label>B <select class="pick-b">{options}</select></label> '
            f'<label>metric <select class="pick-metric"></select></label>'
            f'<div class="pair-result"></div><table class="examples pair-examples"></table></div>')


CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d2330;max-width:1400px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 6px;border-bottom:2px solid #dde3ec}
h3{font-size:15px;margin:18px 0 6px}.meta,.note{color:#556}code{background:#f2f4f8;padding:0 3px;border-radius:3px}
.nav{padding-left:18px}.scroll{overflow-x:auto;max-width:100%}table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border:1px solid #dde3ec;padding:3px 7px;text-align:right;vertical-align:top}
th{background:#f2f4f8;cursor:pointer;user-select:none;white-space:nowrap}th.asc:after{content:" ▲"}th.desc:after{content:" ▼"}
td:nth-child(2),td:nth-child(3),td.text{text-align:left}tr.pick{background:#fff4dc;font-weight:600}
tr.failed,tr.skipped{color:#a33}tr.pruned{color:#999}tr.front td:first-child::after{content:" \\25C6";color:#9467bd}
.verdict{padding:8px 12px;border-radius:6px;margin:8px 0}
.verdict.ok{background:#e7f6e9;border:1px solid #9fd3a7}.verdict.none{background:#fbeaea;border:1px solid #e3aaaa}.verdict.caution{background:#fff6df;border:1px solid #e6c96e}
.reasons li{margin:2px 0}img.pareto{max-width:100%;border:1px solid #dde3ec}
details.run{margin:4px 0}details summary{cursor:pointer}.examples td.text{max-width:420px;white-space:pre-wrap}
.fail{color:#a33;text-align:left}.na{color:#999}.pair label{margin-right:12px}
.pair-result{margin:8px 0;padding:6px 10px;background:#f2f4f8;border-radius:6px}
td.better{background:#e7f6e9}td.worse{background:#fbeaea}
"""

SCRIPT = r"""
(function(){
  "use strict";
  var data = JSON.parse(document.getElementById("report-data").textContent);
  function sortKey(td){
    var v = td.getAttribute("data-sort");
    if (v === "") return null;
    var n = Number(v);
    return isNaN(n) ? v : n;
  }
  document.querySelectorAll("table.board-table").forEach(function(table){
    var heads = table.querySelectorAll("th");
    heads.forEach(function(th){
      th.addEventListener("click", function(){
        var col = Number(th.getAttribute("data-col"));
        var asc = !th.classList.contains("asc");
        heads.forEach(function(h){ h.classList.remove("asc", "desc"); });
        th.classList.add(asc ? "asc" : "desc");
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function(r1, r2){
          var a = sortKey(r1.cells[col]), b = sortKey(r2.cells[col]);
          if (a === null && b === null) return 0;
          if (a === null) return 1;
          if (b === null) return -1;
          if (typeof a !== typeof b) { a = String(a); b = String(b); }
          var c = a < b ? -1 : (a > b ? 1 : 0);
          return asc ? c : -c;
        });
        rows.forEach(function(r){ body.appendChild(r); });
      });
    });
  });
  function fmt(x, d){ return (x === null || x === undefined) ? "-" : Number(x).toFixed(d === undefined ? 4 : d); }
  function text(tag, s, cls){ var e = document.createElement(tag); e.textContent = s; if (cls) e.className = cls; return e; }
  document.querySelectorAll("div.pair").forEach(function(div){
    var board = data[Number(div.getAttribute("data-board"))];
    var selA = div.querySelector(".pick-a"), selB = div.querySelector(".pick-b"), selM = div.querySelector(".pick-metric");
    if (selB.options.length > 1) selB.selectedIndex = 1;
    function pairOf(){
      var a = selA.value, b = selB.value;
      if (board.pairs[a + "|" + b]) return {a: a, b: b, flip: false, res: board.pairs[a + "|" + b]};
      if (board.pairs[b + "|" + a]) return {a: a, b: b, flip: true, res: board.pairs[b + "|" + a]};
      return {a: a, b: b, flip: false, res: null};
    }
    function fillMetrics(){
      var p = pairOf(), keep = selM.value;
      selM.innerHTML = "";
      Object.keys(p.res || {}).forEach(function(m){ var o = text("option", m); o.value = m; selM.appendChild(o); });
      if (keep && p.res && p.res[keep]) selM.value = keep;
    }
    function show(){
      var out = div.querySelector(".pair-result"), table = div.querySelector(".pair-examples");
      out.innerHTML = ""; table.innerHTML = "";
      var p = pairOf();
      if (p.a === p.b) { out.textContent = "Pick two different runs."; return; }
      if (!p.res || !selM.value) { out.textContent = "These two runs share no per-example score."; return; }
      var r = p.res[selM.value], s = p.flip ? -1 : 1;
      var lo = p.flip ? -r.high : r.low, hi = p.flip ? -r.low : r.high;
      var verdict = r.verdict;
      if (p.flip) verdict = verdict.replace("A better", "X").replace("B better", "A better").replace("X", "B better");
      out.appendChild(text("div", "B - A on " + selM.value + " (" + (r.higher_is_better ? "higher" : "lower") +
        " is better): " + (s * r.mean_diff >= 0 ? "+" : "") + fmt(s * r.mean_diff) + ", 95% CI [" + fmt(lo) + ", " +
        fmt(hi) + "], paired bootstrap over " + r.n + " examples scored in both (of " + r.examples + "): " + verdict + "."));
      out.appendChild(text("div", "mean A " + fmt(p.flip ? r.mean_b : r.mean_a) + ", mean B " + fmt(p.flip ? r.mean_a : r.mean_b)));
      var runA = board.runs[p.a], runB = board.runs[p.b], m = selM.value;
      var byId = {}; runB.examples.forEach(function(e){ byId[e.id] = e; });
      var head = document.createElement("tr");
      ["id", "question", "reference", "A", "B", m + " A", m + " B", "B - A"].forEach(function(h){ head.appendChild(text("th", h)); });
      table.appendChild(head);
      runA.examples.forEach(function(ea){
        var eb = byId[ea.id] || {}, tr = document.createElement("tr");
        ["id", "question", "reference"].forEach(function(k){ tr.appendChild(text("td", ea[k] === undefined ? "" : String(ea[k]), "text")); });
        tr.appendChild(text("td", String(ea.prediction === undefined ? "" : ea.prediction), "text"));
        tr.appendChild(text("td", String(eb.prediction === undefined ? "" : eb.prediction), "text"));
        var va = ea[m], vb = eb[m];
        tr.appendChild(text("td", fmt(va))); tr.appendChild(text("td", fmt(vb)));
        var cell = text("td", (typeof va === "number" && typeof vb === "number") ? fmt(vb - va) : "-");
        if (typeof va === "number" && typeof vb === "number" && va !== vb) {
          var bBetter = r.higher_is_better ? vb > va : vb < va;
          cell.className = bBetter ? "better" : "worse";
        }
        tr.appendChild(cell);
        table.appendChild(tr);
      });
    }
    selA.addEventListener("change", function(){ fillMetrics(); show(); });
    selB.addEventListener("change", function(){ fillMetrics(); show(); });
    selM.addEventListener("change", show);
    fillMetrics(); show();
  });
})();
"""
