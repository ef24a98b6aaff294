"""Many `python -m MODULE ARGS...` command lines for the price of one interpreter start.

A refused command line costs about a second of CPU as a subprocess, half of it the interpreter starting and
importing Hydra, OmegaConf, numpy: a table of refusals pays that once per row. `run_commands` starts one driver
process (this file) that imports those libraries once, then forks a child per command line. The child is a
fresh process in everything a command can touch (its own argv, environment, working folder, file descriptors
1 and 2, exit status, and no module of the project imported yet), and runs the entry point's `__main__` the way
`python -m` does (`runpy.run_module(..., run_name="__main__", alter_sys=True)`): what it prints and the status it
exits with are the command's own. It also reports which packages the command imported (`imported`), so a test
can say what a refusal must not load. Tests still run each entry point once as a real subprocess too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Third-party libraries every entry point imports before it can refuse anything. Never the project's own
# modules: a child imports those itself, so nothing a command does at import time is shared between rows.
WARM = ("hydra", "hydra.core.override_parser.overrides_parser", "hydra.core.config_store", "omegaconf", "numpy",
        "optuna", "psutil", "tokenizers", "yaml")


@dataclass
class Command:
    module: str
    args: tuple[str, ...]
    cwd: str
    # Added to the driver's environment for this command only.
    env: dict[str, str] | None = None


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    # Top-level packages the command imported (those the driver had not): () for a real subprocess.
    imported: tuple[str, ...] = ()


def run_commands(commands: list[Command], jobs: int = 2, timeout: float = 300) -> list[Finished]:
    """Each command's exit status, stdout and stderr, in order; up to `jobs` run at once."""
    # Made here, not in the driver: it is removed even when a timeout kills the driver. And not
    # TemporaryDirectory in the driver: its clean-up is an atexit hook, which every forked child would run.
    with tempfile.TemporaryDirectory(prefix="cli-batch-") as folder:
        request = json.dumps({"jobs": jobs, "folder": folder, "commands": [asdict(c) for c in commands]})
        # Its own process group: on a timeout the children it forked go with it.
        driver = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=REPO,
                                  env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
        try:
            stdout, stderr = driver.communicate(request, timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.communicate()
            raise
    if driver.returncode != 0:
        raise RuntimeError(f"cli_batch driver failed (exit {driver.returncode}): {stderr[-3000:]}")
    return [Finished(**{**result, "imported": tuple(result["imported"])}) for result in json.loads(stdout)]


def _child(command: dict, out: Path, err: Path, imported: Path) -> None:
    """In the forked child: become `python -m MODULE ARGS` and never return."""
    code = 1
    already = {name.partition(".")[0] for name in sys.modules}
    try:
        stdout = os.open(out, os.O_WRONLY)
        stderr = os.open(err, os.O_WRONLY)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        os.environ.update(command["env"] or {})
        os.chdir(command["cwd"])
        sys.path[0] = os.getcwd()  # what `python -m` puts first on the path
        sys.argv = ["-m", *command["args"]]
        import runpy

        try:
            runpy.run_module(command["module"], run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as stop:
            # As the interpreter reads an exit status: None is 0, a number is itself, anything else is printed.
            if stop.code is None or isinstance(stop.code, int):
                code = stop.code or 0
            else:
                print(stop.code, file=sys.stderr)
                code = 1
        imported.write_text(json.dumps(sorted({name.partition(".")[0] for name in sys.modules} - already)))
        import atexit

        atexit._run_exitfuncs()  # logging's flush and every handler a command registered, as at interpreter exit
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _drive(request: dict) -> list[dict]:
    import importlib
    import threading

    for name in WARM:
        importlib.import_module(name)
    # fork() copies one thread: a library that started one while importing would leave children a lock held.
    assert threading.active_count() == 1, [t.name for t in threading.enumerate()]
    commands, jobs, folder = request["commands"], request["jobs"], Path(request["folder"])
    files = [tuple(folder / f"{i}.{kind}" for kind in ("out", "err", "imported")) for i in range(len(commands))]
    for path in (path for paths in files for path in paths):
        path.touch()  # read back even if a child dies before it opens them
    results: list[dict | None] = [None] * len(commands)
    running: dict[int, int] = {}
    pending = list(range(len(commands)))
    while pending or running:
        if pending and len(running) < jobs:
            i = pending.pop(0)
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(commands[i], *files[i])
            running[pid] = i
            continue
        pid, status = os.wait()
        i = running.pop(pid)
        out, err, imported = files[i]
        results[i] = {"returncode": os.waitstatus_to_exitcode(status), "stdout": out.read_text(errors="replace"),
                      "stderr": err.read_text(errors="replace"),
                      "imported": json.loads(imported.read_text() or "[]")}  # empty: it died before writing
    return results


if __name__ == "__main__":
    print(json.dumps(_drive(json.load(sys.stdin))))
