"""Generation throughput of the Ollama backend at concurrency 1, 2, 4, 8.

Runs the real OllamaBackend (official AsyncClient over HTTP) against the test server from tests/ with a
fixed per-request delay, so the figures show what concurrency buys when the server can serve requests
in parallel (OLLAMA_NUM_PARALLEL); against a real server, the same script with --host measures it for real.

    .venv/bin/python bench/gen_throughput.py --requests 32 --delay 0.25
    .venv/bin/python bench/gen_throughput.py --host http://127.0.0.1:11434 --model llama3:8b --requests 16
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from datasets_gen.backends import GenFailure, GenRequest  # noqa: E402
from datasets_gen.backends.ollama import OllamaBackend  # noqa: E402
from datasets_gen.config import BackendConfig  # noqa: E402


def measure(host: str, model: str, n: int, concurrency: int) -> tuple[float, int, int]:
    backend = OllamaBackend(BackendConfig(model=model, host=host, concurrency=concurrency, retries=0), seed=0)
    backend.check()
    requests = [(f"q{i}", GenRequest(({"role": "user", "content": f"Question {i}: name one colour."},)))
                for i in range(n)]
    results: dict = {}
    start = time.perf_counter()
    backend.run(requests, lambda key, result: results.__setitem__(key, result))
    seconds = time.perf_counter() - start
    failed = sum(isinstance(r, GenFailure) for r in results.values())
    tokens = sum(getattr(r, "completion_tokens", 0) for r in results.values())
    return seconds, failed, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--delay", type=float, default=0.25, help="test server: seconds per request")
    parser.add_argument("--host", default=None, help="a real Ollama server instead of the test server")
    parser.add_argument("--model", default="teacher:8b")
    parser.add_argument("--levels", default="1,2,4,8")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    def table(host: str) -> None:
        print(f"{args.requests} requests to {host} (model {args.model}"
              + (f", {args.delay}s per request" if args.host is None else "") + ")")
        print(f"{'concurrency':>11} {'seconds':>8} {'req/s':>7} {'tok/s':>7} {'failed':>6} {'speed-up':>8}")
        base = None
        for level in levels:
            seconds, failed, tokens = measure(host, args.model, args.requests, level)
            base = base or seconds
            print(f"{level:>11} {seconds:>8.2f} {args.requests / seconds:>7.1f} {tokens / seconds:>7.1f} "
                  f"{failed:>6} {base / seconds:>7.2f}x")

    if args.host:
        table(args.host)
        return
    from ollama_server import OllamaTestServer

    with OllamaTestServer({args.model: lambda body: "Blue is a colour."}, delay_s=args.delay) as server:
        table(server.host)


if __name__ == "__main__":
    main()
