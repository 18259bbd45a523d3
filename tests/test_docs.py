"""The README documents every command, every setting and the current state machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tempctl.cli import cli
from tempctl.config import FIELDS
from tempctl.core.controller import State
from tempctl.core.diagram import mermaid

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_is_documented_and_has_help(name):
    assert f"`tempctl {name}`" in README, f"README does not document tempctl {name}"
    command = cli.commands[name]
    assert command.help and command.help.strip(), f"tempctl {name} has no help"
    result = CliRunner().invoke(cli, [name, "--help"])
    assert result.exit_code == 0 and "Usage: " in result.output


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: f.env)
def test_every_setting_is_documented(field):
    row = next(
        (line for line in README.splitlines() if line.startswith(f"| `{field.env}` |")), None
    )
    assert row, f"{field.env} missing from the README configuration table"
    assert f"`{field.flag}`" in row and f"`{field.toml}`" in row


def test_state_diagram_is_in_sync():
    block = re.search(
        r"<!-- mermaid:start -->\n```mermaid\n(.*?)```\n<!-- mermaid:end -->", README, re.S
    )
    assert block, "mermaid block markers missing"
    assert block.group(1) == mermaid(), "run: python -m tempctl.core.diagram and paste into README"


@pytest.mark.parametrize("state", list(State))
def test_every_state_is_described(state):
    assert state.value in README


@pytest.mark.parametrize("args", [["-h"], ["--help"]])
def test_help(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "Usage: tempctl" in result.output.replace("cli", "tempctl")
