"""The user's mistakes every layer reports in one line: a wrong setting, a malformed dataset file.

Kept apart from harness/core/config.py (which imports Hydra and OmegaConf to register its schema), so a module
that only raises or catches them (the registries, the metrics, the leaderboard through them) does not pay for
either at import.
"""


class ConfigError(ValueError):
    """A user mistake in the configuration; printed without a stack trace."""


class DataError(ValueError):
    """A dataset file is missing or malformed; the message names the file and line."""
