"""Find files shipped with tempctl: schema.sql, scenarios, Datasette metadata.

A wheel carries copies under ``tempctl/data`` (see pyproject's force-include);
a source checkout or editable install reads the top-level originals.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_SOURCE_ROOT = PACKAGE_DIR.parent


def _pick(packaged: Path, source: Path) -> Path:
    if source.exists() and (_SOURCE_ROOT / "pyproject.toml").exists():
        return source
    return packaged


def schema_path() -> Path:
    return _pick(PACKAGE_DIR / "data" / "schema.sql", _SOURCE_ROOT / "schema.sql")


def scenarios_dir() -> Path:
    return _pick(PACKAGE_DIR / "data" / "scenarios", _SOURCE_ROOT / "replay" / "scenarios")
