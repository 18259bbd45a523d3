"""The base install is light: matplotlib is the `plot` extra, and only `simulate --plot` needs it.

A base install is imitated in a subprocess by blocking matplotlib (``sys.modules`` entry
None makes every ``import matplotlib`` fail, as when it is not installed).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tempctl.sim.simulate import PLOT_INSTALL

REPO = Path(__file__).resolve().parent.parent

WITHOUT_MATPLOTLIB = """
import sys
sys.modules["matplotlib"] = None  # what a base install (no plot extra) looks like
try:
    import matplotlib.pyplot
except ImportError:
    pass
else:
    raise SystemExit("the block did not work")
from tempctl.cli import cli
cli(sys.argv[1:], prog_name="tempctl")
"""


def _tempctl_without_matplotlib(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEMPCTL_", "BITAXE_"))}
    env["TEMPCTL_CONFIG"] = ""
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_MATPLOTLIB, *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


SHORT_RUN = ["--scenario", "constant", "--days", "0.01", "--poll", "30"]


def test_simulate_plot_without_the_extra_exits_2_with_the_install_line(tmp_path):
    res = _tempctl_without_matplotlib(
        tmp_path, "simulate", *SHORT_RUN, "--db", "sim.db", "--plot", "sim.png"
    )
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert PLOT_INSTALL in res.stderr and "--plot" in res.stderr, res.stderr
    assert "Traceback" not in res.stderr
    # refused before any work: no log written, no half-made picture
    assert not (tmp_path / "sim.db").exists() and not (tmp_path / "sim.png").exists()


def test_simulate_without_plot_needs_no_matplotlib(tmp_path):
    res = _tempctl_without_matplotlib(tmp_path, "simulate", *SHORT_RUN, "--db", "sim.db")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "sim.db").exists() and "tempctl" in res.stdout


def test_simulate_plot_with_the_extra_draws_it(tmp_path):
    pytest.importorskip("matplotlib")  # the test extra includes the plot extra
    from click.testing import CliRunner

    from tempctl.cli import cli

    out = tmp_path / "sim.png"
    res = CliRunner().invoke(
        cli, ["simulate", *SHORT_RUN, "--plot", str(out)], env={"TEMPCTL_CONFIG": ""}
    )
    assert res.exit_code == 0, res.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_daemon_and_the_cli_load_no_plotting():
    code = (
        "import sys; import tempctl.cli, tempctl.daemon.loop, tempctl.sim.simulate, "
        "tempctl.ui.server; print(sorted(m for m in ('matplotlib', 'PIL') if m in sys.modules))"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert res.returncode == 0 and res.stdout.strip() == "[]", (res.stdout, res.stderr)


def test_matplotlib_is_only_in_the_plot_extra():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    names = [d.split(">")[0].split("[")[0].strip() for d in project["dependencies"]]
    assert "matplotlib" not in names
    assert any(d.startswith("matplotlib") for d in project["optional-dependencies"]["plot"])
    assert "tempctl[plot]" in project["optional-dependencies"]["test"]  # README: pytest works
