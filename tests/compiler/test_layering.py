"""Imports go one way: core <- passes <- backends <- driver/CLI/API (docs/architecture.md).

Read from the source with ``ast`` (imports inside functions count too), so a pass that reaches
for a backend helper, or a core module that reaches for a pass, fails here rather than in review.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# compiler/ modules above the passes and backends: they assemble the pipeline and talk to users.
TOP = {
    "__init__",
    "api",
    "cli",
    "_cli_errors",
    "_cli_output",
    "driver",
    "analyze",
    "plots",
    "pipeline",
    "inspection",
    "_inspection_onnx",
    "_inspection_tflite",
}
LAYERS = {"core": 0, "passes": 1, "backends": 2, "top": 3}


def _layer(module: str) -> str | None:
    """The layer of a ``qcc`` module name, or None for anything outside qcc."""
    parts = module.split(".")
    if parts[0] != "qcc" or len(parts) == 1:
        return None  # not qcc, or the package root (``qcc.__version__``; everything else in it is lazy)
    if parts[1] in ("passes", "backends"):
        return parts[1]
    return "top" if parts[1] in TOP else "core"


def _modules() -> list[tuple[str, Path]]:
    found = []
    for folder, package in (("compiler", "qcc"), ("passes", "qcc.passes"), ("backends", "qcc.backends")):
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found.append((name, path))
    return found


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module in ("qcc", "qcc.passes", "qcc.backends"):  # from a package: what is imported counts
                names.update(f"{node.module}.{alias.name}" for alias in node.names)
            else:
                names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


@pytest.mark.parametrize(("module", "path"), _modules(), ids=[m for m, _ in _modules()])
def test_imports_go_one_way(module, path):
    own = LAYERS[_layer(module) or "top"]  # the package root sits on top
    upward = sorted(
        name
        for name in _imports(path)
        if _layer(name) is not None and LAYERS[_layer(name)] > own and not name.startswith(("qcc.errors", "qcc.__"))
    )
    assert not upward, f"{module} imports a higher layer: {upward}"
