"""Keep secrets out of everything the harness writes (ledger, W&B, logs, error messages)."""

from __future__ import annotations

import os
import re

SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "OPENAI_API_KEY")
# Keys whose VALUE is a secret, by exact name (lower-case) or suffix. Deliberately not "contains token":
# eval.max_new_tokens, judge.max_tokens and train_tokens shape results and must stay in every record.
SECRET_KEYS = frozenset({"token", "hf_token", "access_token", "auth_token", "api_key", "apikey", "secret",
                         "client_secret", "password", "passwd", "credentials", "wandb_api_key", "openai_api_key"})
_SECRET_KEY_SUFFIXES = ("_api_key", "_secret", "_password", "_access_token", "_auth_token")
# Environment variables whose names say they hold a secret (their values are masked wherever they appear).
_SECRET_ENV_NAME = re.compile(r"(TOKEN|API_?KEY|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
# Token shapes worth masking even when they did not come from a known variable.
_SECRET_SHAPES = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b|\bsk-[A-Za-z0-9_-]{20,}\b|\bgh[pousr]_[A-Za-z0-9]{30,}\b"
                            r"|\bgithub_pat_[A-Za-z0-9_]{30,}\b|\bAKIA[0-9A-Z]{16}\b|\bxox[abprs]-[A-Za-z0-9-]{10,}")
MASK = "***"


def is_secret_key(key: str) -> bool:
    name = str(key).lower()
    return name in SECRET_KEYS or name.endswith(_SECRET_KEY_SUFFIXES)


def looks_like_secret(value: str) -> bool:
    """A token shape, or the value of a secret environment variable."""
    return bool(_SECRET_SHAPES.search(value)) or any(secret in value for secret in _secret_values())


def _secret_values() -> list[str]:
    values = {os.environ.get(name, "") for name in SECRET_ENV_VARS}
    values |= {v for name, v in os.environ.items()
               if _SECRET_ENV_NAME.search(name) and not name.startswith("TOKENIZERS")
               and not name.endswith(("_ENV", "_PATH", "_FILE", "_DIR"))}
    return sorted((v for v in values if len(v) >= 8), key=len, reverse=True)


def redact_text(text: str) -> str:
    for value in _secret_values():
        text = text.replace(value, MASK)
    return _SECRET_SHAPES.sub(MASK, text)


def redact(value):
    """Mask secret-looking keys and any secret value wherever it appears in nested data."""
    if isinstance(value, dict):
        return {k: MASK if is_secret_key(k) and v not in (None, "") else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
