"""Every user mistake stops before anything loads, with one line naming the key / file / option and its fix.

One table: each row is a command line a new user might type (or a dataset folder they might point at) and the
words its single line must hold. The rows run through the entry point's own guard in-process (what
`python -m harness` runs before Hydra), with `results_dir` pointing at a ledger whose bytes must not change;
a handful of rows run the real commands to pin the exit code and the absence of a traceback end to end
(`python -m harness`, `python -m harness.baseline`, `python -m datasets_gen`): each entry point at least once as
a subprocess, the other rows through tests/cli_batch.py (one interpreter start for many command lines).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from cli_batch import Command, Finished, run_commands

from harness.argv_guard import check_command_line, guard_argv

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "harness" / "samples" / "hr_handbook"
# Assembled at run time, so no key-shaped literal sits in the repository.
FAKE_OPENAI_KEY = "sk-" + "LEAK" + "a1b2c3d4" * 4
FAKE_HF_TOKEN = "hf_" + "LEAK" + "Zy9x" * 6
HEX_KEY = "0123456789abcdef" * 2 + "01234567"
ENV_SECRET = "envsecret-" + "q7" * 10
JUDGE = ("judge=openai", "judge.base_url=http://127.0.0.1:9/v1", "judge.model=m")
# What a refusal must not wait for: seconds of imports before the one line.
HEAVY = {"torch", "transformers", "trl", "peft", "sklearn"}


def _qa(i: int, prefix: str = "r", question: str | None = None) -> dict:
    return {"id": f"{prefix}{i}", "question": question or f"What is rule {prefix}{i}?", "answer": f"Rule {i} says yes.",
            "source_doc_ids": []}


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def _dataset(root: Path, kind: str) -> Path:
    """A dataset folder with one defect (or none: 'ok')."""
    folder = root / f"data_{kind}"
    folder.mkdir()
    _write_jsonl(folder / "train.jsonl", [_qa(i, "t") for i in range(4)])
    _write_jsonl(folder / "eval.jsonl", [_qa(i, "e") for i in range(3)])
    if kind == "not_utf8":
        (folder / "train.jsonl").write_bytes(b'{"id": "t0", "question": "caf\xe9?", "answer": "yes"}\n')
    elif kind == "bad_card":
        (folder / "card.json").write_text('{"name": "x",', encoding="utf-8")
    elif kind == "bad_json":
        (folder / "train.jsonl").write_text(json.dumps(_qa(0)) + "\n{not json\n", encoding="utf-8")
    elif kind == "no_answer":
        _write_jsonl(folder / "eval.jsonl", [{"id": "e0", "question": "q?", "answer": ""}])
    elif kind == "shared_ids":
        _write_jsonl(folder / "eval.jsonl", [_qa(1, "t", "A different question?"), _qa(9, "e")])
    elif kind == "shared_questions":
        _write_jsonl(folder / "eval.jsonl", [_qa(7, "e", "what is rule T2?"), _qa(8, "e")])
    elif kind == "duplicate_id":
        _write_jsonl(folder / "train.jsonl", [_qa(1, "t"), _qa(1, "t")])
    elif kind == "long_answers":  # half the training answers far beyond qlora.max_length
        _write_jsonl(folder / "train.jsonl", [{**_qa(i, "t"), "answer": "yes " * (3000 if i % 2 else 1)}
                                              for i in range(4)])
    elif kind == "label_outside":  # a classification set whose eval answer is no label
        shop = REPO / "harness" / "samples" / "shop_catalog"
        for name in ("train.jsonl", "labels.json"):
            (folder / name).write_bytes((shop / name).read_bytes())
        first, *rest = (shop / "eval.jsonl").read_text(encoding="utf-8").splitlines()
        (folder / "eval.jsonl").write_text("\n".join([json.dumps({**json.loads(first), "answer": "Spaceships"}),
                                                      *rest]) + "\n", encoding="utf-8")
    return folder


@dataclass
class Row:
    name: str
    args: tuple[str, ...]
    # Words the single line must hold: the key / file / option, and the fix.
    expect: tuple[str, ...]
    # The secret that must not be echoed.
    secret: str | None = None
    env: dict | None = None


def rows(tmp: Path) -> list[Row]:
    data = {kind: _dataset(tmp, kind) for kind in ("not_utf8", "bad_card", "bad_json", "no_answer", "shared_ids",
                                                     "shared_questions", "duplicate_id", "long_answers", "label_outside", "ok")}
    no_corpus = data["ok"]
    a_file = tmp / "a_file"
    a_file.write_text("x")
    return [
        # Secrets: refused before Hydra writes .hydra/*.yaml, never echoed.
        Row("key as api_key_env", (*JUDGE, f"judge.api_key_env={FAKE_OPENAI_KEY}"),
            ("judge.api_key_env", "NAME of an environment variable"), secret=FAKE_OPENAI_KEY),
        Row("hex key as api_key_env", (*JUDGE, f"judge.api_key_env={HEX_KEY}"),
            ("judge.api_key_env", "NAME of an environment variable"), secret=HEX_KEY),
        Row("lower-case api_key_env", (*JUDGE, "judge.api_key_env=openai_key"),
            ("judge.api_key_env", "upper-case")),
        Row("token in another key", (f"tracker.project={FAKE_HF_TOKEN}",),
            ("tracker.project", "environment variable"), secret=FAKE_HF_TOKEN),
        Row("key under -m", ("-m", "judge=openai,none", f"judge.model={FAKE_OPENAI_KEY}"),
            ("judge.model", "environment variable"), secret=FAKE_OPENAI_KEY),
        Row("secret-named key added", ("+judge.api_key=abc12345",), ("judge.api_key", "environment variable"),
            secret="abc12345"),
        Row("value of a secret env var", (f"tracker.entity={ENV_SECRET}",), ("tracker.entity", "secret"),
            secret=ENV_SECRET, env={"MY_SERVICE_TOKEN": ENV_SECRET}),
        # Paths.
        Row("job folder escaping results_dir", ("-m", "data.name=../../../../../INJECTED"),
            ("data.name", "outside results_dir")),
        Row("data.name with ..", ("data.name=../escape",), ("data.name", "plain name")),
        Row("data.name with a separator", ("data.name=a/b",), ("data.name", "no '/'")),
        Row("model.name with ..", ("model.name=..",), ("model.name", "plain name")),
        Row("results_dir is a file", (f"results_dir={a_file}",), ("results_dir", "is a file", "give a folder")),
        Row("results_dir under a file", (f"results_dir={a_file}/sub",), ("results_dir", "is a file")),
        Row("data.dir missing", ("data.dir=/nonexistent/tunebench",), ("data.dir", "does not exist")),
        # Keys the schema does not know, however added.
        Row("unknown key", ("qlora.rank=8",), ("qlora.rank", "not a setting of qlora", "known: r,")),
        Row("unknown key with +", ("+qlora.rank=8",), ("qlora.rank", "not a setting of qlora", "known: r,")),
        Row("unknown top-level key with +", ("+foo=1",), ("foo", "not a top-level setting", "known:")),
        Row("unknown key with ++", ("++eval.beams=2",), ("eval.beams", "not a setting of eval")),
        Row("unknown option", ("model=gpt5",), ("model=gpt5", "no such option", "tiny_random")),
        Row("unknown hardware", ("hardware=tpu",), ("hardware=tpu", "no such option", "cpu")),
        Row("wrong type", ("qlora.r=eight",), ("qlora.r", "Integer")),
        Row("unparseable override", ("qlora.r=[1",), ("override", "key=value")),
        # Values checked before anything loads.
        Row("zero rank", ("qlora.r=0",), ("qlora.r", "must be > 0")),
        Row("swept bad value", ("-m", "qlora.r=8,0"), ("qlora.r", "must be > 0")),
        Row("unknown scheduler", ("qlora.lr_scheduler=bogus",), ("qlora.lr_scheduler", "known: linear")),
        Row("broken template", ('data.prompt_template="{question} {"',), ("data.prompt_template", "{{")),
        Row("unknown placeholder", ('data.prompt_template="{q}"',), ("data.prompt_template", "{question}")),
        Row("rag template without context", ('data.rag_prompt_template="{question}"',),
            ("data.rag_prompt_template", "{context}")),
        Row("max_length too small", ("qlora.max_length=1",), ("qlora.max_length", ">= 32")),
        Row("max_length over context", ("qlora.max_length=4096",), ("qlora.max_length", "context of 512")),
        Row("negative layers", ("model.n_layers=-1",), ("model.n_layers", "must be > 0")),
        Row("top_p above 1", ("eval.top_p=5",), ("eval.top_p", "(0, 1]")),
        Row("top_p zero", ("eval.top_p=0",), ("eval.top_p", "(0, 1]")),
        Row("max_new_tokens beyond context", ("eval.max_new_tokens=100000",),
            ("eval.max_new_tokens", "context of 512", "lower it")),
        Row("no retrieved context", ("retrieval.max_context_chars=0",), ("retrieval.max_context_chars", "> 0 or null")),
        Row("chunk overlap too big", ("retrieval.chunk_overlap=900",), ("retrieval.chunk_overlap", "[0, chunk_chars)")),
        Row("rag without corpus", ("method=base_rag", f"data.dir={no_corpus}"),
            ("method=base_rag", "corpus.jsonl", "without _rag")),
        Row("unknown metric", ("data.metrics=[bleu,blue]",), ("data.metrics", "blue", "known:")),
        Row("dropout out of range", ("qlora.dropout=1.5",), ("qlora.dropout", "[0, 1)")),
        Row("no epochs, no steps", ("qlora.epochs=0",), ("qlora.epochs", "max_steps")),
        Row("zero eval examples", ("eval.num_examples=0",), ("eval.num_examples", "> 0 or null")),
        Row("openai judge without url", ("judge=openai", "judge.model=m"), ("judge.base_url", "http://")),
        Row("bad fail_at", ("fail_at=boom",), ("fail_at", "load, train")),
        # Data files.
        Row("non-UTF-8 data file", (f"data.dir={data['not_utf8']}",), ("train.jsonl:1", "UTF-8", "save the file")),
        Row("malformed card.json", (f"data.dir={data['bad_card']}",), ("card.json", "not valid JSON", "fix it")),
        Row("invalid JSON line", (f"data.dir={data['bad_json']}",), ("train.jsonl:2", "not valid JSON")),
        Row("empty answer", (f"data.dir={data['no_answer']}",), ("eval.jsonl:1", "'answer'")),
        Row("duplicate id", (f"data.dir={data['duplicate_id']}",), ("train.jsonl:2", "duplicate id")),
        Row("train/eval share ids", (f"data.dir={data['shared_ids']}",),
            ("eval.jsonl", "1 shared id", "'t1'", "data.allow_overlap=true")),
        Row("train/eval share questions", (f"data.dir={data['shared_questions']}",),
            ("eval.jsonl", "1 identical question", "data.allow_overlap=true")),
        # Issue 22: numeric edges against the data, label files, truncation, sample paths, unwritable folders.
        Row("negative max_steps", ("method=instruct", "qlora.max_steps=-5"), ("qlora.max_steps", "-1")),
        Row("eval batch above the eval set", ("eval.batch_size=100000",), ("eval.batch_size", "20 or less")),
        Row("train batch above the train set", ("method=instruct", "qlora.batch_size=100000"),
            ("qlora.batch_size", "60 or less")),
        Row("fraction of an epoch below one step", ("method=instruct", "qlora.epochs=0.001"),
            ("qlora.epochs", "or more", "qlora.max_steps=N")),
        Row("accumulation beyond an epoch", ("method=instruct", "qlora.grad_accum=1000"),
            ("qlora.grad_accum", "15 or less")),
        Row("infinite learning rate", ("qlora.lr=inf",), ("qlora.lr", "finite")),
        Row("negative seed", ("qlora.seed=-1",), ("qlora.seed", "[0,")),
        Row("eval answer outside labels.json", ("data=shop_catalog", f"data.dir={data['label_outside']}"),
            ("eval.jsonl", "labels.json", "Spaceships", "add them to labels.json")),
        Row("answers cut by max_length", ("method=instruct", f"data.dir={data['long_answers']}"),
            ("qlora.max_length", "data.allow_truncation=true")),
        Row("samples path climbing out", ("data.dir=samples:../shop_catalog",), ("samples:NAME", "known: hr_handbook")),
        Row("samples with an absolute path", ("data.dir=samples:/etc",), ("samples:NAME", "data.dir=/etc")),
        Row("results_dir in /proc", ("results_dir=/proc/tunebench",), ("results_dir", "give a folder you can write")),
        Row("cache_dir in /proc", ("cache_dir=/proc/tunebench",), ("cache_dir", "give a folder you can write")),
    ]


BASE = ("model=tiny_random", "tracker=none")


def _ledger(results: Path) -> bytes:
    results.mkdir(parents=True, exist_ok=True)
    path = results / "runs.jsonl"
    path.write_text('{"run_key": "k", "status": "completed"}\n', encoding="utf-8")
    return path.read_bytes()


def test_the_table_has_at_least_forty_rows(tmp_path):
    assert len(rows(tmp_path)) >= 40


def test_every_bad_input_stops_with_one_line(tmp_path, capsys, monkeypatch):
    results = tmp_path / "results"
    before = _ledger(results)
    failures = []
    for row in rows(tmp_path):
        for name, value in (row.env or {}).items():
            monkeypatch.setenv(name, value)
        has_results = any(a.startswith("results_dir=") for a in row.args)
        argv = ["harness", *BASE, *row.args] + ([] if has_results else [f"results_dir={results}"])
        with pytest.raises(SystemExit) as stopped:
            guard_argv(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        problems = []
        if stopped.value.code != 2:
            problems.append(f"exit {stopped.value.code}")
        if len(lines) != 1 or not lines[0].startswith("tunebench: error: "):
            problems.append(f"not one line: {err!r}")
        problems += [f"missing {word!r}" for word in row.expect if word not in err]
        if "Traceback" in err:
            problems.append("traceback")
        if row.secret and row.secret in err:
            problems.append("secret echoed")
        if problems:
            failures.append(f"{row.name}: {'; '.join(problems)} | {err.strip()}")
        for name in row.env or {}:
            monkeypatch.delenv(name)
    assert not failures, "\n".join(failures)
    assert (results / "runs.jsonl").read_bytes() == before
    assert sorted(p.name for p in results.iterdir()) == ["runs.jsonl"]  # no hydra/ folder, no run folder


def test_unwritable_results_dir(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root writes anywhere: use a folder the kernel refuses even to root
        locked.chmod(0o700)
        locked = Path("/proc/1")
        if not locked.is_dir() or os.access(locked, os.W_OK):
            pytest.skip("no folder here that this user cannot write")
    try:
        with pytest.raises(SystemExit) as stopped:
            guard_argv(["harness", *BASE, f"results_dir={locked}/results"])
    finally:
        if locked.is_relative_to(tmp_path):
            locked.chmod(0o700)
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1
    assert "results_dir=" in err and "not writable" in err


def test_hardware_with_a_gpu_is_refused_where_there_is_none(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit) as stopped:
        guard_argv(["harness", *BASE, "hardware=a10"])
    err = capsys.readouterr().err.strip()
    assert stopped.value.code == 2 and len(err.splitlines()) == 1
    assert "hardware=a10 expects a CUDA GPU" in err and "hardware=cpu" in err


def test_good_command_lines_pass_and_home_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    args = ["-m", *BASE, "method=base,instruct", "results_dir=~/runs", "data.allow_overlap=true"]
    assert check_command_line(args) == ["-m", *BASE, "method=base,instruct", f"results_dir={tmp_path}/runs",
                                        "data.allow_overlap=true"]
    # Sweeps only Hydra's sweeper can expand (glob over a group, an optuna interval) are left to the task function.
    assert check_command_line(["-m", *BASE, "model=glob(tiny*)"]) == ["-m", *BASE, "model=glob(tiny*)"]
    assert check_command_line(["-m", *BASE, "qlora.lr=interval(1e-4,1e-3)"])[-1] == "qlora.lr=interval(1e-4,1e-3)"
    # Help and config printing are Hydra's: handed over untouched.
    assert check_command_line(["--help"]) == ["--help"]
    assert check_command_line(["--cfg", "job", "qlora.r=8"]) == ["--cfg", "job", "qlora.r=8"]


def _run(*cmd: str, env: dict | None = None, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *cmd], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def _run_table(commands: list[Command], real: set[int], cross_check: bool = False) -> list[Finished]:
    """Every command's exit status and output: the rows in `real` as real subprocesses, the others through
    cli_batch (about half a second saved a row: the interpreter and Hydra start once), both at once on the two
    cores. With `cross_check` the `real` rows go through cli_batch too, and the two must agree to the byte
    (only for rows that write nothing: the two copies run at the same time)."""
    batched_rows = [i for i in range(len(commands)) if cross_check or i not in real]
    with ThreadPoolExecutor(3) as pool:
        batch = pool.submit(run_commands, [commands[i] for i in batched_rows])
        procs = dict(zip(real, pool.map(lambda i: _run(commands[i].module, *commands[i].args, env=commands[i].env,
                                                       cwd=Path(commands[i].cwd)), real), strict=True))
        batched = dict(zip(batched_rows, batch.result(), strict=True))
    for i, proc in procs.items():
        if i in batched:
            assert (batched[i].returncode, batched[i].stdout, batched[i].stderr) == \
                (proc.returncode, proc.stdout, proc.stderr), f"cli_batch differs from the real command {commands[i]}"
        batched[i] = Finished(proc.returncode, proc.stdout, proc.stderr, batched[i].imported if i in batched else ())
    return [batched[i] for i in range(len(commands))]


def test_entry_points_stop_with_one_line_and_write_nothing(tmp_path):
    """The real commands: exit status 2, one line, no traceback, nothing written."""
    results = tmp_path / "results"
    before = _ledger(results)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text.\n")
    gen_out = tmp_path / "gen"
    cases = [
        (("harness", *BASE, *JUDGE, f"judge.api_key_env={FAKE_OPENAI_KEY}", f"results_dir={results}"),
         ("judge.api_key_env", "NAME of an environment variable")),
        (("harness", "-m", *BASE, "data.name=../../../../INJECTED", f"results_dir={results}"),
         ("data.name", "outside results_dir")),
        (("harness", *BASE, "+qlora.rank=8", f"results_dir={results}"), ("qlora.rank", "not a setting")),
        (("harness.baseline", "data=departments", "+foo=1", f"results_dir={results}"), ("foo", "not a top-level")),
        (("datasets_gen", f"output={gen_out}"), ("input", "input=")),
        (("datasets_gen", "input=/nonexistent/docs", f"output={gen_out}"), ("input", "/nonexistent/docs")),
        (("datasets_gen", f"input={docs}", "name=../../escape"), ("name", "plain name")),
        # braces the shell unquoted: recipe.text_template='{description}' reaches Hydra as {description}
        (("datasets_gen", f"input={docs}", "recipe.text_template={description}", f"output={gen_out}"),
         ("cannot read an override", "{description}", "quoting")),
        (("harness.baseline", "data=departments", "data.name={x}", f"results_dir={results}"),
         ("cannot read an override", "{x}")),
    ]
    # One real subprocess per entry point; the rest through cli_batch.
    procs = _run_table([Command(cmd[0], cmd[1:], str(REPO)) for cmd, _ in cases], real={0, 3, 5},
                       cross_check=True)
    for (cmd, expect), proc in zip(cases, procs, strict=True):
        err = proc.stderr.strip()
        assert proc.returncode == 2, (cmd, proc.stdout, err)
        assert len(err.splitlines()) == 1, (cmd, err)
        assert "Traceback" not in proc.stdout + err
        assert all(word in err for word in expect), (cmd, err)
        assert FAKE_OPENAI_KEY not in proc.stdout + err
        assert proc.imported, cmd  # every row goes through cli_batch, which says what it imported
        assert not HEAVY & set(proc.imported), (cmd, "imported before refusing:", sorted(HEAVY & set(proc.imported)))
    assert (results / "runs.jsonl").read_bytes() == before
    assert sorted(p.name for p in results.iterdir()) == ["runs.jsonl"]
    assert not gen_out.exists() and not (REPO / "escape").exists() and not (REPO.parent / "escape").exists()
    assert not list(tmp_path.glob("**/INJECTED*")) and not (REPO.parent / "INJECTED").exists()


def test_baseline_help_prints_usage():
    proc = _run("harness.baseline", "--help")
    assert proc.returncode == 0 and "python -m harness.baseline data=departments" in proc.stdout
    assert "Traceback" not in proc.stderr


SECRETS = {"HF_TOKEN": FAKE_HF_TOKEN, "OPENAI_API_KEY": FAKE_OPENAI_KEY, "WANDB_API_KEY": HEX_KEY}
SECRETS_TEST = "test_secrets_from_the_environment_and_the_command_line_reach_no_file"


def _refuse_then_run_a_cell(root: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """With secrets in the environment and HOME under `root`: a command line holding a key (refused), then a real
    cell that logs to W&B offline."""
    env = {**SECRETS, "HOME": str(root / "home"), "WANDB_MODE": "offline"}
    refused = _run("harness", *BASE, *JUDGE, f"judge.api_key_env={FAKE_OPENAI_KEY}", "results_dir=~/results",
                   env=env)
    ran = _run("harness", "model=tiny_random", "tracker=wandb_offline", "method=base", "eval.num_examples=3",
               "results_dir=~/results", env=env)
    return refused, ran


@pytest.fixture(scope="module", autouse=True)
def cell_with_secrets(request, tmp_path_factory):
    """The secrets test's commands, started as this module's first test starts: the real cell is most of this
    file's time (its imports alone take seconds), and it runs on the second core while the in-process rows run on
    this one. Yields their folder and a future of (refused, ran); None when that test is not selected, or under
    pytest-xdist (every worker collects every test: each would start its own cell), where the test runs them."""
    if hasattr(request.config, "workerinput") or not any(item.name == SECRETS_TEST for item in request.session.items):
        yield None
        return
    root = tmp_path_factory.mktemp("secrets")
    with ThreadPoolExecutor(1) as pool:
        yield root, pool.submit(_refuse_then_run_a_cell, root)


def test_secrets_from_the_environment_and_the_command_line_reach_no_file(cell_with_secrets, tmp_path):
    """A real cell with secrets in the environment (and one refused on the command line), then every file it
    wrote is searched: results, Hydra's folders and log, the W&B offline run, the cache. Settings named like
    tokens (eval.max_new_tokens, judge.max_tokens) are recorded as values, not masked."""
    root, started = cell_with_secrets or (tmp_path, None)
    refused, ran = started.result() if started else _refuse_then_run_a_cell(root)
    assert refused.returncode == 2
    assert ran.returncode == 0, ran.stderr[-2000:]
    results = root / "home" / "results"  # "~" expanded, no literal "~" folder
    assert not (REPO / "~").exists()
    (record,) = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert record["status"] == "completed"
    assert record["config"]["eval"]["max_new_tokens"] == 64
    assert record["config"]["judge"]["max_tokens"] == 1024
    written = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name == "tunebench.log" for p in written) and any(p.suffix == ".wandb" for p in written)
    assert any(".hydra" in p.parts for p in written)
    for path in written:
        data = path.read_bytes()
        leaked = [name for name, value in SECRETS.items() if value.encode() in data]
        assert not leaked, f"{path} holds {leaked}"
    for output in (refused.stdout + refused.stderr, ran.stdout + ran.stderr):
        assert not [name for name, value in SECRETS.items() if value in output]


def test_results_dir_with_a_tilde_in_a_config_file_is_expanded_for_hydra(tmp_path, monkeypatch):
    import shutil

    import harness.argv_guard

    conf = tmp_path / "conf"
    shutil.copytree(REPO / "conf", conf)
    text = (conf / "config.yaml").read_text().replace("results_dir: results", "results_dir: ~/tb-results")
    (conf / "config.yaml").write_text(text)
    monkeypatch.setattr(harness.argv_guard, "CONF_DIR", conf)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    # Hydra's run folder is ${results_dir}/hydra/...: it gets the expanded path as an override.
    assert check_command_line([*BASE]) == [*BASE, f"results_dir={tmp_path}/home/tb-results"]


def _snapshot(root: Path) -> dict[str, bytes | None]:
    """Every folder and file under `root`, files with their bytes."""
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


def test_a_table_of_refusals_leaves_every_folder_byte_identical(tmp_path):
    """Refusals found late before issue 22 (a service that cannot be reached, a numeric edge, a sample path that
    climbs out, datasets_gen inputs of the wrong kind or too small to split): each is one line and exit 2, and the
    results folder, the dataset output folder and the working folder are byte-identical afterwards (no Hydra run
    folder, no claims/, no .work/)."""
    work = tmp_path / "work"
    results, output = work / "results", work / "datasets"
    _ledger(results)
    (output / "earlier").mkdir(parents=True)
    (output / "earlier" / "train.jsonl").write_text('{"id": "x"}\n')
    docs = work / "docs"
    docs.mkdir()
    (docs / "a.md").write_text("# A\n\nSome text.\n")
    catalog = work / "three.csv"
    catalog.write_text("id,name,description,department\n1,A,aa,X\n2,B,bb,Y\n3,C,cc,X\n")
    unreachable = "http://127.0.0.1:9"
    harness = ("harness", *BASE, f"results_dir={results}")
    table = [
        (("judge unreachable", (*harness, "judge=openai", f"judge.base_url={unreachable}/v1", "judge.model=m",
                                "data.metrics=[ragas]"), {"OPENAI_API_KEY": "not-a-real-key"}),
         ("judge=openai", "cannot connect")),
        (("W&B unreachable", (*harness, "tracker=wandb"),
          {"WANDB_API_KEY": "a" * 40, "WANDB_BASE_URL": unreachable}), ("tracker=wandb", "cannot reach")),
        (("negative steps", (*harness, "method=instruct", "qlora.max_steps=-5"), None), ("qlora.max_steps", "-1")),
        (("eval batch above the eval set", (*harness, "eval.batch_size=100000"), None),
         ("eval.batch_size", "20 or less")),
        (("samples path climbing out", (*harness, "data.dir=samples:../shop_catalog"), None),
         ("samples:NAME", "known: hr_handbook")),
        (("folder as a catalog", ("datasets_gen", "recipe=departments", f"input={docs}", f"output={output}",
                                  "name=d1"), None), ("input", "is a folder", ".csv")),
        (("catalog as documents", ("datasets_gen", "recipe=doc_qa", f"input={catalog}", f"output={output}",
                                   "name=d2"), None), ("input", "is a file", "recipe=departments")),
        (("split too small", ("datasets_gen", "recipe=departments", f"input={catalog}", f"output={output}",
                              "name=d3"), None), ("eval split", "per label", "nothing was written")),
    ]
    before = _snapshot(work)
    # The refusal found inside datasets_gen's Hydra run (its run folder made, then removed) as a real subprocess.
    procs = _run_table([Command(cmd[0], cmd[1:], str(work), env) for (_, cmd, env), _ in table], real={7})
    failures = []
    for ((name, cmd, _), expect), proc in zip(table, procs, strict=True):
        err = proc.stderr.strip()
        if proc.returncode != 2 or len(err.splitlines()) != 1 or "Traceback" in proc.stdout + err \
                or not all(word in err for word in expect):
            failures.append(f"{name}: exit {proc.returncode}: {err[-500:]}")
        if HEAVY & set(proc.imported):
            failures.append(f"{name}: imported {sorted(HEAVY & set(proc.imported))} before refusing")
    assert not failures, "\n".join(failures)
    after = _snapshot(work)
    assert after.keys() == before.keys(), sorted(set(after) ^ set(before))
    assert after == before
