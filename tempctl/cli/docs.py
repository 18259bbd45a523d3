"""The README's settings table, generated from the settings table itself (config.FIELDS).

The README holds the output between ``START`` and ``END``; tests/test_docs.py keeps it in
sync, as it does the state diagram. Print it with ``python -m tempctl.cli.docs``, or
rewrite the README's block in place with ``python -m tempctl.cli.docs --write README.md``.
A setting's wording lives in its ``Field.help`` (its range comes from the validator):
edit it there, not in the README.
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from tempctl.config import FIELDS, Field

__all__ = ["END", "START", "default_text", "replace_block", "settings_table"]

START = "<!-- settings:start (generated: python -m tempctl.cli.docs --write README.md) -->"
END = "<!-- settings:end -->"
HEADER = (
    "| environment | flag | TOML key | default | per device | meaning |\n"
    "|---|---|---|---|---|---|\n"
)


def default_text(f: Field) -> str:
    """A field's default as the README shows it."""
    value = f.default
    if f.type == "devices":
        return "(required)"
    if value in ("", None):
        return "(empty)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if f.type in ("path", "url", "host"):
        return f"`{value}`"
    return str(value)


def _meaning(f: Field) -> str:
    text = f.doc
    named = [c for c in f.choices if re.search(rf"\b{re.escape(c)}\b", text)]
    if len(named) < len(f.choices):  # the table lists every accepted value somewhere
        text += " One of " + ", ".join(f"`{c}`" for c in f.choices) + "."
    return text.replace("|", "\\|")


def _code(name: str) -> str:
    return f"`{name}`" if name else "-"


def settings_table() -> str:
    """The Markdown table: one row per field, in FIELDS order."""
    rows = [
        f"| {_code(f.env)} | {_code(f.flag)} | {_code(f.toml)} | {default_text(f)} | "
        f"{'yes' if f.per_device else ''} | {_meaning(f)} |"
        for f in FIELDS
    ]
    return HEADER + "\n".join(rows) + "\n"


def replace_block(text: str, table: str) -> str:
    """``text`` with the part between the markers replaced by ``table``."""
    pattern = re.compile(re.escape(START) + r"\n.*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise click.ClickException(f"no {START} ... {END} block to replace")
    return pattern.sub(lambda _: f"{START}\n{table}{END}", text, count=1)


@click.command()
@click.option(
    "--write",
    "readme",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Rewrite the table block of this file (the README) instead of printing.",
)
def main(readme: Path | None) -> None:
    """Print the settings table for the README (or rewrite its block with --write)."""
    table = settings_table()
    if readme is None:
        click.echo(table, nl=False)
        return
    text = readme.read_text(encoding="utf-8")
    new = replace_block(text, table)
    if new != text:
        readme.write_text(new, encoding="utf-8")
        click.echo(f"{readme}: settings table updated")
    else:
        click.echo(f"{readme}: settings table already up to date")


if __name__ == "__main__":
    main()
