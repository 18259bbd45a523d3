"""The README documents every command, every setting and the current state machine."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from tempctl.cli import cli, docs
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


def test_settings_table_is_in_sync():
    block = re.search(re.escape(docs.START) + r"\n(.*?)" + re.escape(docs.END), README, re.S)
    assert block, "settings table markers missing"
    assert block.group(1) == docs.settings_table(), (
        "run: python -m tempctl.cli.docs --write README.md"
    )


def test_settings_table_has_a_row_per_field_with_its_default():
    rows = docs.settings_table().splitlines()[2:]
    assert [r.split(" | ")[0] for r in rows] == [f"| `{f.env}`" for f in FIELDS]
    by_env = {r.split(" | ")[0][3:-1]: r.split(" | ") for r in rows}
    assert by_env["TEMP_THRESHOLD"][3:5] == ["63", "yes"]
    assert by_env["BITAXE_IP"][3] == "(required)" and by_env["TEMPCTL_DRY_RUN"][3] == "false"
    # choices the help does not name (WARNING) are listed
    assert "`WARNING`" in by_env["TEMPCTL_LOG_LEVEL"][5]
    assert "Allowed: above 0, at most 168 h." in by_env["STABLE_TIMEFRAME"][5]  # the validator's


def test_settings_generator_rewrites_the_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{docs.START}\n| stale |\n{docs.END}\nrest\n")
    runner = CliRunner()
    first = runner.invoke(docs.main, ["--write", str(readme)])
    assert first.exit_code == 0 and "updated" in first.output
    assert readme.read_text() == f"intro\n{docs.START}\n{docs.settings_table()}{docs.END}\nrest\n"
    again = runner.invoke(docs.main, ["--write", str(readme)])
    assert again.exit_code == 0 and "already up to date" in again.output
    printed = runner.invoke(docs.main, [])
    assert printed.output == docs.settings_table()
    readme.write_text("no markers\n")
    assert runner.invoke(docs.main, ["--write", str(readme)]).exit_code == 1


@pytest.mark.parametrize("state", list(State))
def test_every_state_is_described(state):
    assert state.value in README


@pytest.mark.parametrize("args", [["-h"], ["--help"]])
def test_help(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and "Usage: tempctl" in result.output.replace("cli", "tempctl")
