"""One ledger record as a W&B run (config + summary) and back: the only mapping between the two.

The tracker writes a cell's record with `to_wandb`; every W&B source (online through `wandb.Api`, offline
through the run file) reads it back with `from_wandb`, so a run present in the ledger and in W&B gives the same
record dict, hence the same leaderboard row.

Layout, chosen so the W&B UI can group, filter and chart on it:
- config: the cell's composed config (model.name, method.name, qlora.r, ...: the run key's config) plus a
  `tunebench` section with the record's identity: run_key, run_id, sweep_id, model, method, data, hardware,
  data_hashes, versions, git_sha, schema_version (plain columns to group on); `group` (the W&B group) and
  `null_keys` (summary keys whose value is None: W&B keeps no None in a summary).
- summary: `status` and the record's other top-level values, and each section flattened one level:
  `metrics/<name>`, `metrics_ci/<name>` ({mean, low, high, n}), `cost/<key>`, `train/<key>`, `judge/<key>`,
  `retrieval/<key>`, `preflight/<key>`, `prompt/<key>`.
- history (not read back): the training loss curve under `curve/`, the predictions table under `eval/`.

W&B drops a NaN summary value too: a NaN figure reads back as absent (no figure, as the ranking treats it).
"""

from __future__ import annotations

from dataclasses import MISSING, Field, fields

from harness.core.ledger import RunRecord

IDENTITY = "tunebench"
# The config key of a run the leaderboard logs (--log-wandb): the boards, not a cell, so every W&B source skips it.
LEADERBOARD_MARKER = "tunebench_leaderboard"
# Record fields kept in the W&B config's `tunebench` section.
IDENTITY_FIELDS = ("run_key", "run_id", "sweep_id", "model", "method", "data", "hardware", "data_hashes",
                   "versions", "git_sha", "schema_version")
# Record fields that are dicts, flattened one level into `<section>/<key>` summary keys.
SECTIONS = ("metrics", "metrics_ci", "cost", "train", "judge", "retrieval", "preflight", "prompt")
# Everything else but `config`: a summary value of its own.
SCALARS = tuple(f.name for f in fields(RunRecord) if f.name not in (*IDENTITY_FIELDS, *SECTIONS, "config"))
# Summary prefixes the tracker logs as history: never part of a record.
HISTORY_PREFIXES = ("curve/", "eval/")


def to_wandb(record: dict) -> tuple[dict, dict]:
    """(config, summary) of a W&B run that carries every value of `record` (a RunRecord as a dict)."""
    config = dict(record.get("config") or {})
    config[IDENTITY] = {name: record.get(name) for name in IDENTITY_FIELDS}
    summary = {name: record.get(name) for name in SCALARS}
    for section in SECTIONS:
        for key, value in (record.get(section) or {}).items():
            summary[f"{section}/{key}"] = value
    # W&B keeps no None in a summary: the keys that hold one are listed, so they read back as None, not absent.
    config[IDENTITY]["null_keys"] = sorted(k for k, v in summary.items() if v is None)
    return config, {k: v for k, v in summary.items() if v is not None}


def from_wandb(config: dict, summary: dict) -> dict | None:
    """The ledger record a W&B run carries; None for a run the harness did not write (no `tunebench` config)."""
    config = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
    identity = config.pop(IDENTITY, None)
    if not isinstance(identity, dict) or not identity.get("run_key"):
        return None
    record = {f.name: _default(f) for f in fields(RunRecord)}
    record.update({name: identity.get(name, record[name]) for name in IDENTITY_FIELDS})
    record["config"] = config
    for key, value in summary.items():
        key = str(key)
        if key.startswith("_") or key.startswith(HISTORY_PREFIXES):
            continue
        section, sep, name = key.partition("/")
        if sep and section in SECTIONS:
            record[section][name] = _plain(value)
        elif key in SCALARS:
            record[key] = _plain(value)
    for key in identity.get("null_keys") or []:
        section, sep, name = key.partition("/")
        if sep and section in SECTIONS:
            record[section][name] = None
    return record


def _default(spec: Field):
    """A RunRecord field's default (a fresh dict for a dict field); None for a field that has none."""
    if spec.default_factory is not MISSING:
        return spec.default_factory()
    return None if spec.default is MISSING else spec.default


def _plain(value):
    """JSON-shaped copy of a summary value (the public API hands out dict and list subclasses)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
