"""In-process generation with any harness model config: the whole pipeline on a laptop, no server.

Small local models have no constrained decoding here, so a request with a JSON schema gets the schema
spelled out in its prompt and the recipe's parser decides whether the reply is usable; what is not is
counted as dropped, never patched.
"""

from __future__ import annotations

import json
from pathlib import Path

from datasets_gen.backends import GenError, GenReply, GenRequest, OnResult


class LocalBackend:
    def __init__(self, cfg, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.loaded = None

    def describe(self) -> dict:
        return {"kind": "local", "model": self.cfg.model, "digest": None, "host": None}

    def check(self) -> None:
        from harness.config import ConfigError, HardwareConfig, ModelConfig, QLoraConfig, RunConfig, load_option
        from harness.models import load_model

        try:
            model = load_option("model", self.cfg.model, ModelConfig)
            hardware = load_option("hardware", self.cfg.hardware, HardwareConfig)
            cache_dir = Path(RunConfig.cache_dir).expanduser()
            self.loaded = load_model(model, hardware, QLoraConfig(load_in_4bit=False), cache_dir)
        except ConfigError as exc:
            raise GenError(f"backend: {exc}") from exc

    def run(self, requests: list[tuple[str, GenRequest]], on_result: OnResult) -> None:
        import torch

        from harness.config import EvalConfig
        from harness.predict import generate

        torch.manual_seed(self.seed)
        settings = EvalConfig(
            max_new_tokens=self.cfg.num_predict,
            batch_size=self.cfg.batch_size,
            do_sample=self.cfg.temperature > 0,
            temperature=max(self.cfg.temperature, 1e-5),
        )
        for start in range(0, len(requests), self.cfg.batch_size):
            batch = requests[start : start + self.cfg.batch_size]
            conversations = [_with_schema(request) for _, request in batch]
            result = generate(self.loaded.model, self.loaded.tokenizer, conversations, settings, progress=False)
            seconds = result.generate_s / len(batch)
            for index, (key, _) in enumerate(batch):
                on_result(key, GenReply(result.predictions[index], result.prompt_tokens[index],
                                        result.generated_tokens[index], seconds))


def _with_schema(request: GenRequest) -> list[dict]:
    messages = [dict(m) for m in request.messages]
    if request.schema is not None:
        messages[-1]["content"] += (
            "\n\nReply with JSON only, no other text, matching this JSON schema:\n" + json.dumps(request.schema)
        )
    return messages
