"""The engine never imports a product package, and layers/models/kernels never import the
engine's internals."""

import ast
from pathlib import Path

import limelight

PACKAGE = Path(limelight.__file__).parent
PRODUCT = {"server", "characters", "chat", "memory", "voice", "story", "world", "enterprise"}
ENGINE_INTERNALS = {
    "scheduler",
    "block_manager",
    "model_runner",
    "llm_engine",
    "llm",
    "async_engine",
    "sampler",
    "sequence",
    "detokenizer",
    "loader",
    "tokenizer",
}


def imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:  # `from a.b import c`: a.b.c
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.startswith("limelight")}


def test_engine_imports_no_product_package() -> None:
    files = list((PACKAGE / "engine").rglob("*.py"))
    assert len(files) > 20
    for path in files:
        for name in imports(path):
            parts = name.split(".")
            assert len(parts) < 2 or parts[1] == "engine", f"{path} imports {name}"


def test_layers_and_models_import_nothing_above_them() -> None:
    for sub in ("layers", "models", "kernels"):
        for path in (PACKAGE / "engine" / sub).rglob("*.py"):
            for name in imports(path):
                parts = name.split(".")
                assert parts[:2] == ["limelight", "engine"], f"{path} imports {name}"
                assert parts[2] not in ENGINE_INTERNALS | PRODUCT, f"{path} imports {name}"
