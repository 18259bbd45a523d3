"""The package layout is the design: these checks keep the layers honest (issue 15)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "tempctl"
MODULES = sorted(p for p in PKG.rglob("*.py"))


def imports(path: Path) -> list[tuple[str, list[str]]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
    return out


def test_core_imports_no_other_tempctl_package():
    for path in (PKG / "core").glob("*.py"):
        for module, _ in imports(path):
            if module.startswith("tempctl"):
                assert module.startswith("tempctl.core"), f"{path.name} imports {module}"


def test_no_private_name_is_imported_across_modules():
    for path in MODULES:
        for module, names in imports(path):
            if module.startswith("tempctl"):
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                assert not private, f"{path.relative_to(PKG)} imports {private} from {module}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PKG)))
def test_no_module_over_600_lines(path):
    assert len(path.read_text().splitlines()) <= 600


def test_every_layer_is_a_subpackage():
    layers = {p.name for p in PKG.iterdir() if (p / "__init__.py").exists()}
    assert {"core", "device", "store", "daemon", "sim", "offline", "ui", "cli"} <= layers
