"""Keep secrets out of everything the harness writes (ledger, W&B, logs, error messages)."""

from __future__ import annotations

import os
import re

SECRET_ENV_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "WANDB_API_KEY", "OPENAI_API_KEY")
_SECRET_KEY = re.compile(r"(token|api_?key|secret|password|credential)", re.IGNORECASE)
# Token shapes worth masking even when they did not come from a known variable.
_SECRET_SHAPES = re.compile(r"\bhf_[A-Za-z0-9]{20,}\b|\bsk-[A-Za-z0-9_-]{20,}\b")
MASK = "***"


def _secret_values() -> list[str]:
    values = {os.environ.get(name, "") for name in SECRET_ENV_VARS}
    return sorted((v for v in values if len(v) >= 8), key=len, reverse=True)


def redact_text(text: str) -> str:
    for value in _secret_values():
        text = text.replace(value, MASK)
    return _SECRET_SHAPES.sub(MASK, text)


def redact(value):
    """Mask secret-looking keys and any secret value wherever it appears in nested data."""
    if isinstance(value, dict):
        return {k: MASK if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value
