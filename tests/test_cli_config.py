"""`tempctl config` and the shared settings options, through click's CliRunner.

One test runs the real program in a subprocess (``python -m tempctl``) to check the
exit status and stderr a systemd unit would see.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tempctl.cli import cli
from tempctl.config import FIELDS

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No setting leaks in from the developer's shell, and /etc/tempctl is never read."""
    for name in list(os.environ):
        if name.startswith("TEMPCTL_") or name in {f.env for f in FIELDS} | {"STATE_DIRECTORY"}:
            monkeypatch.delenv(name)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    empty.chmod(0o644)
    monkeypatch.setenv("TEMPCTL_CONFIG", str(empty))
    return str(empty)


def invoke(args, env=None):
    return CliRunner().invoke(cli, args, env=env, catch_exceptions=False)


def row(output: str, name: str) -> list[str]:
    """The (name, value, source) cells of one table row."""
    line = next(ln for ln in output.splitlines() if ln.startswith(name + " "))
    return re.split(r"\s{2,}", line.strip())


@pytest.mark.parametrize("option", ["-h", "--help"])
@pytest.mark.parametrize("args", [[], ["config"]])
def test_help(option, args):
    result = invoke([*args, option])
    assert result.exit_code == 0
    assert result.output.startswith("Usage: ")
    if args:
        assert "Example:" in result.output
        assert "--temp-threshold FLOAT" in result.output
        words = " ".join(result.output.split())  # help text is wrapped to the terminal
        assert "[env TEMP_THRESHOLD; default: 63]" in words
    else:
        assert "config" in result.output


def test_every_field_has_its_flag():
    command = cli.commands["config"]
    opts = {opt for p in command.params for opt in p.opts + p.secondary_opts}
    for f in FIELDS:
        assert f.flag in opts, f.flag
    assert {"--config", "--json", "--no-dry-run"} <= opts
    names = {p.name for p in command.params}
    assert {f.attr for f in FIELDS} <= names


def test_bad_env_exits_2_with_one_line():
    result = invoke(["config"], env={"TEMP_THRESHOLD": "abc"})
    assert result.exit_code == 2
    assert result.stderr == "Error: TEMP_THRESHOLD=abc (environment): not a number\n"
    assert result.stdout == ""


def test_bad_flag_exits_2():
    result = invoke(["config", "--check-interval", "0.1"])
    assert result.exit_code == 2
    assert (
        result.stderr
        == "Error: --check-interval=0.1 (command line): must be between 0.2 and 600 (seconds)\n"
    )


def test_world_writable_config_exits_2(tmp_path):
    path = tmp_path / "open.toml"
    path.write_text("temp_threshold = 60\n")
    path.chmod(0o666)
    result = invoke(["config", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: {path}: refusing a world-writable config file (fix with: chmod o-w {path})\n"
    )


def test_table(clean_env):
    result = invoke(
        ["config", "--max-frequency", "550", "--dry-run"],
        env={"TEMP_THRESHOLD": "60", "CHECK_INTERVAL": "0.5"},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.splitlines()[0] == f"config file: {clean_env}"
    assert row(out, "name") == ["name", "value", "source"]
    assert row(out, "BITAXE_IP") == ["BITAXE_IP", "(not set)", "default"]
    assert row(out, "TEMP_THRESHOLD") == ["TEMP_THRESHOLD", "60", "environment"]
    assert row(out, "CHECK_INTERVAL") == ["CHECK_INTERVAL", "0.5", "environment"]
    assert row(out, "MAX_FREQUENCY") == ["MAX_FREQUENCY", "550", "command line"]
    assert row(out, "TEMPCTL_DRY_RUN") == ["TEMPCTL_DRY_RUN", "true", "command line"]
    assert row(out, "FIRST_FREQUENCY") == ["FIRST_FREQUENCY", "490", "default"]
    assert row(out, "TEMPCTL_ALERT_URL") == ["TEMPCTL_ALERT_URL", '""', "default"]
    for f in FIELDS:
        row(out, f.env)  # every setting is listed
    assert result.stderr == ""


def test_table_lists_devices(tmp_path):
    path = tmp_path / "tempctl.toml"
    path.write_text(
        'check_interval = 5\n[[devices]]\nname = "gamma"\nurl = "10.0.0.5"\n'
        'max_frequency = 550\n[[devices]]\nurl = "10.0.0.6:8080"\n'
    )
    result = invoke(["config", "--config", str(path)])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert row(out, "CHECK_INTERVAL") == ["CHECK_INTERVAL", "5", str(path)]
    assert row(out, "BITAXE_IP") == ["BITAXE_IP", "http://10.0.0.5,http://10.0.0.6:8080", str(path)]
    devices = out.split("\ndevices:\n", 1)[1]
    assert row(devices, "gamma") == ["gamma", "http://10.0.0.5", "max_frequency=550.0"]
    assert row(devices, "10.0.0.6:8080") == ["10.0.0.6:8080", "http://10.0.0.6:8080"]


def test_json(clean_env):
    result = invoke(
        ["config", "--json", "--bitaxe-ip", "10.0.0.5"],
        env={"TEMPCTL_SETTLE": "3", "TEMPCTL_SETTL": "4"},
    )
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert set(info) == {"config_file", "settings", "devices", "warnings"}
    assert info["config_file"] == clean_env
    assert list(info["settings"]) == [f.attr for f in FIELDS]
    for f in FIELDS:
        assert set(info["settings"][f.attr]) == {"env", "value", "source"}
        assert info["settings"][f.attr]["env"] == f.env
    assert info["settings"]["settle"] == {
        "env": "TEMPCTL_SETTLE",
        "value": 3.0,
        "source": "environment",
    }
    assert info["settings"]["devices"] == {
        "env": "BITAXE_IP",
        "value": ["http://10.0.0.5"],
        "source": "command line",
    }
    assert info["settings"]["dry_run"]["value"] is False
    assert info["devices"] == [{"name": "10.0.0.5", "url": "http://10.0.0.5", "overrides": {}}]
    warning = "unknown environment variable TEMPCTL_SETTL ignored (did you mean TEMPCTL_SETTLE?)"
    assert info["warnings"] == [warning]
    assert result.stderr == f"Warning: {warning}\n"


def test_no_dry_run_beats_env():
    result = invoke(["config", "--json", "--no-dry-run"], env={"TEMPCTL_DRY_RUN": "1"})
    assert json.loads(result.stdout)["settings"]["dry_run"] == {
        "env": "TEMPCTL_DRY_RUN",
        "value": False,
        "source": "command line",
    }


@pytest.mark.slow
def test_real_process_bad_env(clean_env):
    env = dict(os.environ, TEMP_THRESHOLD="abc", PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "tempctl", "config"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "Error: TEMP_THRESHOLD=abc (environment): not a number\n"
    assert proc.stdout == ""
