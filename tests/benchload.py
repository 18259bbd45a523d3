"""Load a script of benchmarks/ as a module, as ``python benchmarks/NAME.py`` would run it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def load_benchmark(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # a sibling importing it by name gets this one
    spec.loader.exec_module(module)
    return module
