"""Run the fault suites and publish their table: docs/faults.md (fault, expected, observed).

    python tests/fault_report.py                     # run the suites, write docs/faults.md
    python tests/fault_report.py -- -n 2             # extra pytest arguments after --
    python tests/fault_report.py --results r.jsonl   # only render rows already recorded

Each test in the suites records its rows through the ``fault`` fixture (tests/procs.py):
the expected outcome is stated in the test, the observed one is measured by it, and the
result is the test's own verdict. Nothing in the table is written by hand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Every suite with a ``fault`` fixture records rows; found, not listed, so a new suite
# (test_lock.py was missed when it was added) cannot be left out of the table.
SUITES = tuple(
    str(p.relative_to(REPO))
    for p in sorted((REPO / "tests").glob("test_*.py"))
    if "procs.fault_recorder()" in p.read_text(encoding="utf-8")
)
RESULTS_ENV = "FAULT_TABLE_RESULTS"

# The list, in its order; a row goes under the first name its fault starts with.
ORDER = (
    "connection refused",
    "connect timeout",
    "read timeout",
    "5xx",
    "404",
    "truncated JSON",
    "non-JSON",
    "body over 64 KiB",
    "wrong types",
    "missing fields",
    "sensor -1",
    "sensor 0",
    "sensor 127",
    "spontaneous device reboot",
    "firmware overheat trip",
    "PATCH answered 400",
    "PATCH 200 but not applied",
    "restart request",
    "different device",
    "wall clock",
    "database locked",
    "disk full",
    "database missing",
    "database",
    "SIGKILL",
    "a daemon killed with SIGKILL",
    "SIGTERM",
    "a second `tempctl run`",
    "network",
    "world-writable",
)

ELSEWHERE = (
    (
        "Datasette read-only, loopback by default, no write path",
        (
            "tests/test_ui.py: test_serves_the_live_file_mutable_on_loopback, "
            "test_write_sql_is_refused_and_the_file_is_untouched, "
            "test_an_installed_write_plugin_is_not_loaded"
        ),
    ),
    ("systemd unit exposure <= 2.0", "tests/test_systemd.py: test_exposure_at_most_2"),
    (
        "controller invariants under random readings and clock steps (hypothesis)",
        "tests/test_invariants.py",
    ),
)


INTRO = (
    "Each row is one test of the fault suites ("
    + ", ".join(f"`{s}`" for s in SUITES)
    + "). The daemon is the real `tempctl run` process in compressed time (polls every "
    "0.25 s, 2 s settle, 7.2 s stable window) against the emulator (`tempctl emulate` "
    "and its fault knobs) or a scripted AxeOS device on pytest-httpserver. The expected "
    "outcome is stated in the test; the observed one is what it measured in the log "
    "(SQLite) and from the process. Every daemon run also passes the log invariants: "
    "ids without holes, transitions chained, no frequency outside "
    "[SECOND_FREQUENCY or the floor, MAX_FREQUENCY], no law step on an invalid reading, "
    "one outcome per command."
)


def rank(row: dict) -> tuple[int, str]:
    name = row["fault"]
    for i, prefix in enumerate(ORDER):
        if name.startswith(prefix):
            return i, name
    return len(ORDER), name


def cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip() or "—"


def load(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    # a test run twice (re-runs) keeps its last verdict
    last: dict[tuple[str, str], dict] = {}
    for row in rows:
        last[(row["test"], row["fault"])] = row
    return sorted(last.values(), key=rank)


def figures(rows: list[dict]) -> dict:
    out: dict = {
        "fault kinds tried": len({r["fault"] for r in rows}),
        "passed": sum(r["result"] == "pass" for r in rows),
        "failed": sum(r["result"] != "pass" for r in rows),
    }
    for r in rows:
        out.update(r.get("figures") or {})
    return out


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            text=True,
            capture_output=True,
            timeout=10,
            check=False,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            text=True,
            capture_output=True,
            timeout=10,
            check=False,
        ).stdout
        return out.stdout.strip() + ("+changes" if dirty.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def render(rows: list[dict], *, seconds: float | None = None) -> str:
    figs = figures(rows)
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# Faults: expected and observed",
        "",
        "<!-- Generated by `python tests/fault_report.py`; do not edit by hand. -->",
        "",
        INTRO,
        "",
        (
            f"Run: {when}, commit {git_commit()}, Python {platform.python_version()}, "
            f"{platform.system()} {platform.machine()}"
            + (f", {seconds:.0f} s" if seconds is not None else "")
            + "."
        ),
        "",
        "**Figures:** " + "; ".join(f"{k}: {v}" for k, v in figs.items()) + ".",
        "",
        "| Fault | Expected | Observed | Result |",
        "|---|---|---|---|",
    ]
    for r in rows:
        verdict = "pass" if r["result"] == "pass" else "**FAIL**"
        lines.append(
            f"| {cell(r['fault'])} | {cell(r['expected'])} | {cell(r['observed'])} | {verdict} |"
        )
    lines += ["", "Covered by other suites (not re-run for this table):", ""]
    lines += [f"- {what}: {where}" for what, where in ELSEWHERE]
    return "\n".join(lines) + "\n"


def run_suites(results: Path, pytest_args: list[str]) -> int:
    env = dict(os.environ, **{RESULTS_ENV: str(results)})
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", "0", "-p", "no:cacheprovider"]
    cmd += [*SUITES, *pytest_args]  # one process: the results file is shared
    return subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--results",
        type=Path,
        help="render these recorded rows (JSON lines) instead of running the suites",
    )
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "faults.md")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest (after --)")
    args = parser.parse_args(argv)
    seconds = None
    code = 0
    if args.results:
        results = args.results
    else:
        results = Path(tempfile.mkdtemp(prefix="tempctl-faults-")) / "results.jsonl"
        t0 = time.monotonic()
        code = run_suites(results, args.pytest_args)
        seconds = time.monotonic() - t0
    if not results.exists():
        print(f"no rows recorded in {results}", file=sys.stderr)
        return code or 1
    rows = load(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(rows, seconds=seconds))
    print(f"{args.output}: {len(rows)} rows from {results}; {json.dumps(figures(rows))}")
    return code


if __name__ == "__main__":
    sys.exit(main())
