"""A test double of `wandb.Api` (no W&B server can run here), fed with real offline runs.

It speaks the part of the public API (wandb 0.31) that harness/board/sources.py uses, with the same shapes:
- `Api().runs(path, filters=None, order="+created_at", per_page=50, include_sweeps=False, lazy=True)`: an
  iterable of runs of project `path` ("entity/project"); `filters` is MongoDB-style, of which the double
  implements `{"group": NAME}` (and refuses anything else, so a new filter cannot pass silently).
- each run: `id`, `name`, `group`, `state`, `tags`, `config` (user keys, values unwrapped, as
  `Run._load_from_attrs` leaves them), `summary_metrics` (a dict), and `file(name).download(root, replace)`.

The config and summary of each run are what `wandb leet inspect --summary --json` reads from a real offline
run the test suite wrote, i.e. what `wandb sync` would upload. `lazy=True` runs raise on `config` /
`summary_metrics`, so a caller that forgets `lazy=False` fails here instead of issuing one request per run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from harness.board.sources import inspect_offline_run


class DoubleFile:
    """`Run.file(name)`: `download(root)` writes it to root/name, as the real `File.download` does."""

    def __init__(self, source: Path, name: str) -> None:
        self.source = source
        self.name = name

    def download(self, root: str = ".", replace: bool = False, exist_ok: bool = False):
        target = Path(root) / self.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not (replace or exist_ok):
            raise ValueError(f"File already exists, pass replace=True to overwrite: {target}")
        shutil.copyfile(self.source, target)
        return target.open()


class DoubleRun:
    def __init__(self, run_dir: Path, inspected: dict, lazy: bool) -> None:
        self._dir = run_dir
        self._lazy = lazy
        self._inspected = inspected
        self.id = inspected["run_id"]
        self.name = inspected.get("name")
        self.state = inspected.get("state")
        self.tags = inspected.get("tags") or []
        self.group = (inspected.get("config", {}).get("tunebench") or {}).get("group")

    @property
    def config(self) -> dict:
        self._check_loaded()
        return dict(self._inspected.get("config") or {})

    @property
    def summary_metrics(self) -> dict:
        self._check_loaded()
        return dict(self._inspected.get("summary") or {})

    def file(self, name: str) -> DoubleFile:
        path = self._dir / "files" / name
        if not path.is_file():
            raise ValueError(f"no file {name} in run {self.id}")
        return DoubleFile(path, name)

    def _check_loaded(self) -> None:
        if self._lazy:
            raise AssertionError("lazy run: config and summary were not loaded (pass lazy=False to Api.runs)")


class DoubleApi:
    """`wandb.Api()` over the offline runs under `wandb_dir`, as project `project`."""

    def __init__(self, wandb_dir: Path, project: str = "team/tunebench") -> None:
        self.project = project
        self.calls: list[dict] = []
        self._runs = [(d, inspect_offline_run(d)) for d in sorted({p.parent for p in wandb_dir.rglob("run-*.wandb")})]

    def runs(self, path: str | None = None, filters: dict | None = None, order: str = "+created_at",
             per_page: int = 50, include_sweeps: bool = False, lazy: bool = True):
        self.calls.append({"path": path, "filters": filters, "lazy": lazy})
        if path != self.project:
            raise ValueError(f"Could not find project {path}")
        unknown = set(filters or {}) - {"group"}
        if unknown:
            raise NotImplementedError(f"the double implements only the group filter, not {sorted(unknown)}")
        runs = [DoubleRun(d, inspected, lazy) for d, inspected in self._runs]
        group = (filters or {}).get("group")
        return [r for r in runs if group is None or r.group == group]
