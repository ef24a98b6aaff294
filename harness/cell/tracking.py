"""Experiment tracking behind one small interface: W&B (online or offline) or nothing.

The local ledger is written whatever the tracker; W&B is a view of it. Configs and error texts pass
through `redact` before they leave the process.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Protocol

from harness.core.config import ConfigError, TrackerBackend, TrackerConfig
from harness.core.ledger import FAILED, RunRecord
from harness.core.redact import redact
from harness.core.wandb_record import IDENTITY, to_wandb


class Tracker(Protocol):
    def start(self, name: str, group: str, config: dict, tags: list[str], run_id: str | None = None) -> None: ...

    def finish(self, record: RunRecord, rows: list[dict], adapter_dir: Path | None) -> None: ...


class NullTracker:
    def start(self, name: str, group: str, config: dict, tags: list[str], run_id: str | None = None) -> None:
        pass

    def finish(self, record: RunRecord, rows: list[dict], adapter_dir: Path | None) -> None:
        pass


class WandbTracker:
    """One W&B run per cell, whatever became of it (completed, failed, skipped by the preflight): its config and
    summary carry every value of the cell's ledger record (harness/core/wandb_record.py), so W&B can be read as a
    leaderboard source. The W&B run id is the record's run id."""

    def __init__(self, cfg: TrackerConfig, results_dir: Path) -> None:
        self.cfg = cfg
        self.dir = results_dir
        self.run = None

    def start(self, name: str, group: str, config: dict, tags: list[str], run_id: str | None = None) -> None:
        import wandb  # deferred, optional: only W&B tracking or a W&B source imports it

        self.dir.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            group=self.cfg.group or group,
            name=name,
            id=run_id,
            config=redact(config),
            tags=tags,
            mode=self.cfg.mode.value,
            dir=str(self.dir),
            reinit="finish_previous",
            # No code or environment snapshot: it is not needed to compare runs and may hold secrets.
            settings=wandb.Settings(save_code=False, disable_git=True, console="off", silent=True),
        )

    def finish(self, record: RunRecord, rows: list[dict], adapter_dir: Path | None) -> None:
        import wandb  # deferred, optional: only W&B tracking or a W&B source imports it

        if self.run is None:
            return
        config, summary = to_wandb(redact(asdict(record)))
        config[IDENTITY]["group"] = self.run.group  # what `--source wandb...: --group` filters on
        self.run.config.update(config, allow_val_change=True)
        # The status as a tag too: the runs table filters on tags at a glance.
        self.run.tags = tuple(dict.fromkeys([*self.run.tags, record.status]))
        for step, loss in record.train.get("losses", []):
            self.run.log({"curve/train_loss": loss, "curve/train_step": step})
        if self.cfg.log_predictions and rows:
            # Judge failures add `<metric>_error` keys to the rows they happened on only.
            columns = list(dict.fromkeys(c for r in rows for c in r))
            self.run.log({"eval/predictions": wandb.Table(columns=columns,
                                                          data=[[r.get(c) for c in columns] for r in rows])})
        # After the history: a logged key must not overwrite a record value in the summary.
        self.run.summary.update(summary)
        if self.cfg.log_adapter and adapter_dir is not None and adapter_dir.exists():
            artifact = wandb.Artifact(f"adapter-{record.run_key}", type="lora-adapter", metadata=redact(record.config))
            artifact.add_dir(str(adapter_dir))
            self.run.log_artifact(artifact)
        self.run.finish(exit_code=1 if record.status == FAILED else 0)
        self.run = None


def check_tracker_login(cfg: TrackerConfig) -> None:
    """Online W&B needs a login; the entry point asks before Hydra creates a folder, the cell again."""
    if cfg.backend == TrackerBackend.none or cfg.mode.value != "online":
        return
    if not os.environ.get("WANDB_API_KEY") and not _netrc_has_wandb():
        raise ConfigError(
            "tracker=wandb needs a W&B login: run `wandb login` or set WANDB_API_KEY in the environment "
            "(never in a config); or use tracker=wandb_offline / tracker=none"
        )


# The server online W&B talks to unless WANDB_BASE_URL names another (a self-hosted one).
WANDB_DEFAULT_URL = "https://api.wandb.ai"
WANDB_PROBE_TIMEOUT_S = 10


def probe_wandb_server(cfg: TrackerConfig) -> None:
    """Online W&B's server answers at all (any HTTP status will do): unreachable, wandb.init retries for minutes
    and the cell's run folder is already written. Asked by the entry point only, before Hydra starts."""
    if cfg.backend == TrackerBackend.none or cfg.mode.value != "online":
        return
    url = os.environ.get("WANDB_BASE_URL") or WANDB_DEFAULT_URL
    try:
        urllib.request.urlopen(url, timeout=WANDB_PROBE_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answered
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise ConfigError(f"tracker=wandb: cannot reach the W&B server at {url} ({reason}); check the network or "
                          f"WANDB_BASE_URL, or use tracker=wandb_offline (sync later with `wandb sync`) / "
                          f"tracker=none") from None


def make_tracker(cfg: TrackerConfig, results_dir: Path) -> Tracker:
    if cfg.backend == TrackerBackend.none:
        return NullTracker()
    check_tracker_login(cfg)
    return WandbTracker(cfg, results_dir)


def _netrc_has_wandb() -> bool:
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    return netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")
