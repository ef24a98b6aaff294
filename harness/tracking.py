"""Experiment tracking behind one small interface: W&B (online or offline) or nothing.

The local ledger is written whatever the tracker; W&B is a view of it. Configs and error texts pass
through `redact` before they leave the process.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from harness.config import TrackerBackend, TrackerConfig
from harness.ledger import RunRecord
from harness.redact import redact


class Tracker(Protocol):
    def start(self, name: str, group: str, config: dict, tags: list[str]) -> None: ...

    def finish(self, record: RunRecord, rows: list[dict], adapter_dir: Path | None) -> None: ...


class NullTracker:
    def start(self, name: str, group: str, config: dict, tags: list[str]) -> None:
        pass

    def finish(self, record: RunRecord, rows: list[dict], adapter_dir: Path | None) -> None:
        pass


class WandbTracker:
    def __init__(self, cfg: TrackerConfig, results_dir: Path) -> None:
        self.cfg = cfg
        self.dir = results_dir
        self.run = None

    def start(self, name: str, group: str, config: dict, tags: list[str]) -> None:
        import wandb

        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.cfg.group or group,
            name=name,
            config=redact(config),
            tags=tags,
            mode=self.cfg.mode.value,
            dir=str(self.dir),
            reinit="finish_previous",
            # No code or environment snapshot: it is not needed to compare runs and may hold secrets.
            settings=wandb.Settings(save_code=False, disable_git=True, console="off", silent=True),
        )

    def finish(self, record: RunRecord, rows: list[dict], adapter_dir: Path | None) -> None:
        import wandb

        if self.run is None:
            return
        summary = {f"metrics/{k}": v for k, v in record.metrics.items()}
        summary.update({f"cost/{k}": v for k, v in record.cost.items() if isinstance(v, int | float)})
        summary.update({f"train/{k}": v for k, v in record.train.items() if isinstance(v, int | float)})
        for name, counts in record.judge.get("metrics", {}).items():
            summary.update({f"judge/{name}/scored": counts["scored"], f"judge/{name}/failed": counts["failed"]})
        summary.update(status=record.status, run_key=record.run_key)
        if record.error:
            summary["error"] = redact(record.error)
        for step, loss in record.train.get("losses", []):
            self.run.log({"train/loss": loss, "train/step": step})
        self.run.summary.update(summary)
        if self.cfg.log_predictions and rows:
            # Judge failures add `<metric>_error` keys to the rows they happened on only.
            columns = list(dict.fromkeys(c for r in rows for c in r))
            self.run.log({"eval/predictions": wandb.Table(columns=columns,
                                                          data=[[r.get(c) for c in columns] for r in rows])})
        if self.cfg.log_adapter and adapter_dir is not None and adapter_dir.exists():
            artifact = wandb.Artifact(f"adapter-{record.run_key}", type="lora-adapter", metadata=redact(record.config))
            artifact.add_dir(str(adapter_dir))
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=0 if record.status == "completed" else 1)
        self.run = None


def make_tracker(cfg: TrackerConfig, results_dir: Path) -> Tracker:
    if cfg.backend == TrackerBackend.none:
        return NullTracker()
    if cfg.mode.value == "online" and not os.environ.get("WANDB_API_KEY") and not _netrc_has_wandb():
        from harness.config import ConfigError

        raise ConfigError(
            "tracker=wandb needs a W&B login: run `wandb login` or set WANDB_API_KEY in the environment "
            "(never in a config); or use tracker=wandb_offline / tracker=none"
        )
    return WandbTracker(cfg, results_dir)


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
