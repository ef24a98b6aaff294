"""In-process generation with any harness model config: the whole pipeline on a laptop, no server.

A request with a JSON schema is decoded under that schema (lm-format-enforcer masks every token that
would break it), which is what Ollama's `format=` does server-side: even a 135M model then returns
parseable JSON, though what it says inside may still be weak; the recipe's quality filters judge that.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from datasets_gen.backends import GenError, GenReply, GenRequest, OnResult


class LocalBackend:
    def __init__(self, cfg, seed: int) -> None:
        self.cfg = cfg
        self.seed = seed
        self.loaded = None
        self._tokenizer_data = None

    def describe(self) -> dict:
        return {"kind": "local", "model": self.cfg.model, "digest": None, "host": None,
                "options": {"temperature": self.cfg.temperature, "seed": self.seed,
                            "num_predict": self.cfg.num_predict, "hardware": self.cfg.hardware}}

    def check(self) -> None:
        from harness.cell.models import load_model
        from harness.core.config import ConfigError, HardwareConfig, ModelConfig, QLoraConfig, RunConfig, load_option

        try:
            model = load_option("model", self.cfg.model, ModelConfig)
            hardware = load_option("hardware", self.cfg.hardware, HardwareConfig)
            cache_dir = Path(RunConfig.cache_dir).expanduser()
            self.loaded = load_model(model, hardware, QLoraConfig(load_in_4bit=False), cache_dir)
        except ConfigError as exc:
            raise GenError(f"backend: {exc}") from exc

    def run(self, requests: list[tuple[str, GenRequest]], on_result: OnResult) -> None:
        import torch

        from harness.cell.predict import generate
        from harness.core.config import EvalConfig

        torch.manual_seed(self.seed)
        settings = EvalConfig(
            max_new_tokens=self.cfg.num_predict,
            batch_size=self.cfg.batch_size,
            do_sample=self.cfg.temperature > 0,
            temperature=max(self.cfg.temperature, 1e-5),
        )
        # One batch shares one decoding constraint, so requests are grouped by schema first.
        by_schema: dict[str, list[tuple[str, GenRequest]]] = defaultdict(list)
        for key, request in requests:
            by_schema[json.dumps(request.schema, sort_keys=True)].append((key, request))
        for group in by_schema.values():
            schema = group[0][1].schema
            kwargs = {"prefix_allowed_tokens_fn": self._constraint(schema)} if schema is not None else None
            for start in range(0, len(group), self.cfg.batch_size):
                batch = group[start : start + self.cfg.batch_size]
                conversations = [_with_schema(request) for _, request in batch]
                result = generate(self.loaded.model, self.loaded.tokenizer, conversations, settings,
                                  progress=False, generate_kwargs=kwargs)
                seconds = result.generate_s / len(batch)
                for index, (key, _) in enumerate(batch):
                    on_result(key, GenReply(result.predictions[index], result.prompt_tokens[index],
                                            result.generated_tokens[index], seconds))

    def _constraint(self, schema: dict):
        from lmformatenforcer import JsonSchemaParser, TokenEnforcer

        if self._tokenizer_data is None:
            self._tokenizer_data = _enforcer_tokenizer_data(self.loaded.tokenizer)
        # One enforcer serves every row: it tracks states by token prefix, and each prompt is its own root.
        enforcer = TokenEnforcer(self._tokenizer_data, JsonSchemaParser(schema))
        return lambda batch_id, tokens: enforcer.get_allowed_tokens(tokens.tolist()).allowed_tokens


def _enforcer_tokenizer_data(tokenizer):
    """lm-format-enforcer's tokenizer table, built here because its transformers integration imports a module
    that transformers 5 removed. Same construction: each token decoded after a '0' to see its leading space."""
    from lmformatenforcer import TokenEnforcerTokenizerData

    zero = tokenizer.encode("0", add_special_tokens=False)[-1]
    special = set(tokenizer.all_special_ids)
    regular = []
    for token_id in range(len(tokenizer)):
        if token_id in special:
            continue
        after_zero = tokenizer.decode([zero, token_id])[1:]
        regular.append((token_id, after_zero, len(after_zero) > len(tokenizer.decode([token_id]))))
    return TokenEnforcerTokenizerData(
        regular, lambda ids: tokenizer.decode(ids).rstrip("\ufffd"), tokenizer.eos_token_id, False, len(tokenizer)
    )


def _with_schema(request: GenRequest) -> list[dict]:
    """The schema also goes into the prompt: the constraint keeps the reply valid, the text says what to put in it."""
    messages = [dict(m) for m in request.messages]
    if request.schema is not None:
        messages[-1]["content"] += "\n\nReply with JSON only, matching this JSON schema:\n" + json.dumps(request.schema)
    return messages
