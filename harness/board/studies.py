"""Which runs are on a search's front: hydra/sweeper=tunebench writes each study's best trials (its Pareto front
with two objectives) to `studies/<study>.json` beside the ledger, by run key; the Pareto plot and the report mark
them. Read from those files, not from Optuna's storage: the board needs neither optuna nor a database driver."""

from __future__ import annotations

import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)

STUDIES_DIR = "studies"


def study_fronts(ledger_path: Path | None) -> dict[str, str]:
    """run key → the study whose front it is on, from every study file beside the ledger ({} without any)."""
    if ledger_path is None or not (ledger_path.parent / STUDIES_DIR).is_dir():
        return {}
    fronts: dict[str, str] = {}
    for path in sorted((ledger_path.parent / STUDIES_DIR).glob("*.json")):
        try:
            study = json.loads(path.read_text(encoding="utf-8"))
            fronts.update({t["run_key"]: study["study"] for t in study["front"]})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s: not a study file tunebench wrote (%s); its front is not marked", path, exc)
    return fronts
