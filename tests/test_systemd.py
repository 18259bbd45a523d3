"""The systemd units and the example configuration files in systemd/.

Real tools only: `systemd-analyze verify` / `security --offline=yes` on the unit files,
`load_settings` on the example files, and the units' seccomp policy applied for real
(libseccomp's Python binding, where the system Python has it) around `tempctl run` and
`tempctl ui`. Each check skips with the reason when its tool is missing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from procs import Proc, daemon_env, free_port, start_daemon, wait_for

from tempctl.config import FIELDS, Settings, load_settings
from tempctl.sim.emulator import Emulator
from tempctl.store.eventlog import Log

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
UNITS = ("tempctl.service", "tempctl-datasette.service")
ENV_EXAMPLE = SYSTEMD / "tempctl.env.example"
TOML_EXAMPLE = SYSTEMD / "tempctl.toml.example"
ORIGINAL_NAMES = (
    "BITAXE_IP",
    "TEMP_THRESHOLD",
    "FIRST_FREQUENCY",
    "SECOND_FREQUENCY",
    "MAX_FREQUENCY",
    "CHECK_INTERVAL",
    "STABLE_TIMEFRAME",
)
LAN_NETS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
MAX_EXPOSURE = 2.0

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None,
    reason="systemd-analyze is not installed (Debian/Ubuntu: apt-get install systemd)",
)


def tempctl_script() -> Path:
    """The installed `tempctl` console script of the Python running the tests."""
    here = Path(sys.executable).with_name("tempctl")
    if here.exists():
        return here
    found = shutil.which("tempctl")
    if found is None:
        pytest.skip("the tempctl console script is not installed (pip install .)")
    return Path(found)


def unit_entries(path: Path) -> list[tuple[str, str, str]]:
    """(section, key, value) in file order; systemd allows repeated keys, so no dict."""
    out, section = [], ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


def unit_value(path: Path, key: str) -> str:
    values = [v for _, k, v in unit_entries(path) if k == key]
    assert values, f"{path.name} has no {key}="
    return values[-1]


def installed_copies(tmp_path: Path) -> list[Path]:
    # `verify` checks that ExecStart's binary exists and is executable, so the units
    # point at /usr/local/bin/tempctl only where it is installed. The copies point at this
    # environment's console script instead; nothing else changes. (`--root=DIR` would make
    # us rebuild a whole tree under DIR for the same check.)
    script = tempctl_script()
    copies = []
    for name in UNITS:
        text = (SYSTEMD / name).read_text()
        assert "ExecStart=/usr/local/bin/tempctl " in text
        copy = tmp_path / name
        copy.write_text(text.replace("ExecStart=/usr/local/bin/tempctl ", f"ExecStart={script} "))
        copies.append(copy)
    return copies


def analyze(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, check=False)


# --- systemd-analyze -------------------------------------------------------------------------


@needs_analyze
def test_units_verify_without_a_word(tmp_path):
    # verify exits 0 even when it finds problems: silence is the only pass.
    res = analyze("verify", *map(str, installed_copies(tmp_path)))
    assert (res.stderr, res.stdout) == ("", "")
    assert res.returncode == 0


@needs_analyze
@pytest.mark.parametrize(
    "change, complaint",
    [
        (("WatchdogSec=60", "WatchdogSecs=60"), "WatchdogSecs"),
        (("ProtectSystem=strict", "ProtectSystem=stricter"), "stricter"),
        (("Type=notify", "Type=notifyy"), "notifyy"),
    ],
)
def test_verify_reports_mistakes_on_stderr(tmp_path, change, complaint):
    # The check above can fail: a typo in a copy of the unit is reported on stderr.
    unit = installed_copies(tmp_path)[0]
    unit.write_text(unit.read_text().replace(*change))
    res = analyze("verify", str(unit))
    assert complaint in res.stderr


@needs_analyze
def test_verify_wants_the_execstart_binary(tmp_path):
    # Why the copies above rewrite ExecStart: verify refuses a missing binary.
    unit = installed_copies(tmp_path)[0]
    unit.write_text(unit.read_text().replace(str(tempctl_script()), str(tmp_path / "nope")))
    res = analyze("verify", str(unit))
    assert "is not executable" in res.stderr


def exposure(unit: Path) -> float:
    res = analyze("security", "--offline=yes", "--no-pager", str(unit))
    if "--offline" in res.stderr and "unrecognized" in res.stderr:
        pytest.skip(f"this systemd-analyze has no --offline ({res.stderr.strip()})")
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", res.stdout)
    assert m, f"no exposure level in the output:\n{res.stdout}\n{res.stderr}"
    return float(m.group(1))


@needs_analyze
@pytest.mark.parametrize("name", UNITS)
def test_exposure_at_most_2(name):
    assert exposure(SYSTEMD / name) <= MAX_EXPOSURE


@needs_analyze
def test_exposure_is_measured(tmp_path):
    # The parser reads a real number: a unit with no hardening rates far above the bar.
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    assert exposure(bare) > 9.0


# --- what the units say ----------------------------------------------------------------------


def test_daemon_unit_contract():
    unit = SYSTEMD / "tempctl.service"
    assert unit_value(unit, "Type") == "notify"
    assert unit_value(unit, "NotifyAccess") == "main"
    assert unit_value(unit, "ExecStart") == "/usr/local/bin/tempctl run"
    assert unit_value(unit, "EnvironmentFile") == "/etc/tempctl/tempctl.env"
    assert unit_value(unit, "Restart") == "on-failure"
    assert unit_value(unit, "StateDirectory") == "tempctl"
    assert (unit_value(unit, "User"), unit_value(unit, "Group")) == ("tempctl", "tempctl")
    # The loop wakes at least once a second and pings when half of WATCHDOG_USEC has
    # passed (tempctl/notify.py), so anything much above 2 s is safe.
    assert int(unit_value(unit, "WatchdogSec")) >= 10
    assert unit_value(unit, "MemoryDenyWriteExecute") == "yes"
    assert unit_value(unit, "RestrictAddressFamilies") == "AF_INET AF_INET6 AF_UNIX"
    assert "network-online.target" in unit_value(unit, "After")


def test_datasette_unit_contract():
    unit = SYSTEMD / "tempctl-datasette.service"
    daemon = SYSTEMD / "tempctl.service"
    cmd = unit_value(unit, "ExecStart").split()
    assert cmd[:2] == ["/usr/local/bin/tempctl", "ui"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    # The same log file the daemon writes by default: $STATE_DIRECTORY/tempctl.db.
    state = "/var/lib/" + unit_value(daemon, "StateDirectory")
    assert cmd[cmd.index("--db") + 1] == f"{state}/tempctl.db"
    for key in ("User", "Group"):
        assert unit_value(unit, key) == unit_value(daemon, key)
    assert unit_value(unit, "IPAddressAllow") == "localhost"


def test_datasette_unit_reads_the_log_read_only():
    """Issue 13.15: Datasette gets the log's directory read-only, at the file-system level.

    StateDirectory= would make /var/lib/tempctl writable in its namespace; ProtectSystem=
    strict keeps it read-only, and ReadOnlyPaths= says so. A read-only reader of a WAL log
    needs the -shm file the daemon keeps while it runs, so Datasette runs only beside it."""
    unit = SYSTEMD / "tempctl-datasette.service"
    daemon = SYSTEMD / "tempctl.service"
    keys = {k for _, k, _ in unit_entries(unit)}
    state = "/var/lib/" + unit_value(daemon, "StateDirectory")
    assert not keys & {"StateDirectory", "ReadWritePaths", "LogsDirectory", "CacheDirectory"}
    assert unit_value(unit, "ProtectSystem") == "strict"
    assert state in unit_value(unit, "ReadOnlyPaths").split()
    assert unit_value(unit, "BindsTo") == "tempctl.service"
    assert "tempctl.service" in unit_value(unit, "After").split()
    assert unit_value(unit, "WantedBy") == "tempctl.service"  # starts again with the daemon


def test_datasette_serves_the_log_from_a_read_only_mount(tmp_path):
    """What the unit gives Datasette, made with a read-only bind mount (unshare -m): the log
    is served while a writer holds it open, and the file is not changed by serving it."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) for a read-only bind mount")
    data = tmp_path / "state"
    data.mkdir()
    db = data / "tempctl.db"
    writer = Log(db)  # the running daemon: it keeps -wal and -shm in place
    writer.start_run({}, ts_ms=1_700_000_000_000)
    port = free_port()
    ro = shlex.quote(str(data))
    argv = ["unshare", "-m", "sh", "-c", f'mount --bind -o ro {ro} {ro} && exec "$@"', "-"]
    argv += [sys.executable, "-m", "tempctl", "ui", "--db", str(db), "--port", str(port)]
    env = daemon_env("127.0.0.1:9", db, tmp_path)
    url = f"http://127.0.0.1:{port}/tempctl/runs.json?_shape=array"
    try:
        with Proc("datasette", argv, env=env, cwd=tmp_path, out=tmp_path / "ro.out") as ui:
            body = wait_for(lambda: _get(url), timeout=30, what="the runs table", proc=ui)
            if b"mount" in ui.output().encode() and ui.poll() is not None:
                pytest.skip(ui.output())
    finally:
        writer.close()
    assert [r["id"] for r in json.loads(body)] == [1], body


def test_both_units_share_the_hardening():
    keys = {
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "NoNewPrivileges",
        "SystemCallFilter",
        "SystemCallArchitectures",
        "MemoryDenyWriteExecute",
        "CapabilityBoundingSet",
        "RestrictAddressFamilies",
        "UMask",
        "ProtectProc",
    }
    a, b = (sorted((k, v) for _, k, v in unit_entries(SYSTEMD / n) if k in keys) for n in UNITS)
    assert a == b
    assert {k for k, _ in a} == keys


# --- the example configuration files ---------------------------------------------------------


def env_file(text: str) -> dict[str, str]:
    """NAME=value lines as systemd's EnvironmentFile= reads them (no quoting used here)."""
    env = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        name, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", name), f"line {n}: {raw!r}"
        assert not re.search(r"['\"\\]", value), f"line {n}: keep values unquoted: {raw!r}"
        env[name] = value
    return env


def uncomment_env(text: str) -> str:
    return re.sub(r"(?m)^#(TEMPCTL_[A-Z_]+=)", r"\1", text)


def no_config(tmp_path: Path) -> str:
    return str(tmp_path / "absent.toml")


def defaults(**changes) -> dict:
    base = {f.attr: getattr(Settings(), f.attr) for f in FIELDS if f.attr != "devices"}
    return {**base, **changes}


def values(s: Settings) -> dict:
    return {f.attr: getattr(s, f.attr) for f in FIELDS if f.attr != "devices"}


def assert_documentation_address(url: str) -> None:
    host = url.split("://")[-1].split(":")[0]
    addr = ipaddress.ip_address(host)
    assert not any(addr in net for net in LAN_NETS), f"{host} is a LAN address"
    assert addr in ipaddress.ip_network("192.0.2.0/24")  # TEST-NET-1, RFC 5737


def test_env_example_uses_the_original_names_and_loads():
    env = env_file(ENV_EXAMPLE.read_text())
    assert list(env) == list(ORIGINAL_NAMES)
    s = load_settings(environ=env, default_config="/nonexistent/tempctl.toml")
    assert [d.url for d in s.devices] == ["http://192.0.2.10"]
    assert_documentation_address(s.devices[0].url)
    assert values(s) == defaults()
    assert s.warnings == ()


def test_env_example_mentions_every_setting_with_its_default(tmp_path):
    text = ENV_EXAMPLE.read_text()
    env = env_file(uncomment_env(text))
    assert {f.env for f in FIELDS if not f.deprecated} <= set(env)
    config = env.pop("TEMPCTL_CONFIG")
    assert config == "/etc/tempctl/tempctl.toml"
    # The commented values are the real defaults (the db one is the systemd default).
    s = load_settings(environ=env, default_config=no_config(tmp_path))
    s_systemd = load_settings(
        environ={"BITAXE_IP": "192.0.2.10", "STATE_DIRECTORY": "/var/lib/tempctl"},
        default_config=no_config(tmp_path),
    )
    assert values(s) == values(s_systemd)
    assert s.warnings == ()


def test_toml_example_loads_with_the_defaults(tmp_path):
    s = load_settings(config_path=str(TOML_EXAMPLE), environ={})
    assert [d.url for d in s.devices] == ["http://192.0.2.10"]
    assert values(s) == defaults()


def test_toml_example_commented_keys_are_the_defaults(tmp_path):
    keys = "|".join(f.toml for f in FIELDS if not f.deprecated)
    text = re.sub(rf"(?m)^# (({keys}) = )", r"\1", TOML_EXAMPLE.read_text())
    path = tmp_path / "tempctl.toml"
    path.write_text(text)
    s = load_settings(config_path=str(path), environ={})
    toml_keys = set(re.findall(r"(?m)^(\w+) = ", text))
    assert {f.toml for f in FIELDS if not f.deprecated} == toml_keys
    assert values(s) == defaults(db="/var/lib/tempctl/tempctl.db")


def test_toml_example_devices_block(tmp_path):
    # Everything uncommented, bitaxe_ip replaced by the [[devices]] tables.
    text = re.sub(r"(?m)^#\s*(\[\[devices\]\]|\w+ = )", r"\1", TOML_EXAMPLE.read_text())
    path = tmp_path / "fleet.toml"
    path.write_text(re.sub(r"(?m)^bitaxe_ip = .*$", "", text))
    s = load_settings(config_path=str(path), environ={})
    assert [d.name for d in s.devices] == ["gamma-desk", "supra-closet"]
    for d in s.devices:
        assert_documentation_address(d.url)
    closet = s.for_device(s.devices[1])
    assert (closet.temp_threshold, closet.max_frequency, closet.first_frequency) == (60, 525, 475)


# --- the units' seccomp policy, applied for real ----------------------------------------------

SANDBOX = r"""
import errno, mmap, os, re, subprocess, sys
import seccomp

unit, analyze, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
listing = subprocess.run([analyze, "syscall-filter"], capture_output=True, text=True).stdout
groups, cur = {}, None
for line in listing.splitlines():
    if re.fullmatch(r"@\S+", line):
        cur = groups.setdefault(line, [])
    elif cur is not None and line.strip() and not line.strip().startswith("#"):
        cur.append(line.strip())

def expand(name):
    return set().union(*map(expand, groups[name])) if name.startswith("@") else {name}

allow, mdwe = set(), False
for raw in open(unit):
    key, _, value = raw.strip().partition("=")
    if key == "SystemCallFilter":
        names = set().union(*map(expand, value.lstrip("~").split()))
        allow = allow - names if value.startswith("~") else allow | names
    mdwe |= key == "MemoryDenyWriteExecute" and value == "yes"

f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))  # SystemCallErrorNumber=EPERM
guarded = {"mmap", "mprotect", "pkey_mprotect", "shmat"} if mdwe else set()
for name in sorted(allow - guarded):
    try:
        f.add_rule(seccomp.ALLOW, name)
    except Exception:
        pass  # not a system call on this architecture
if mdwe:  # systemd's MemoryDenyWriteExecute=yes rules
    W, X = mmap.PROT_WRITE, mmap.PROT_EXEC
    for ok in (0, W, X):
        f.add_rule(seccomp.ALLOW, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, W | X, ok))
    for name in ("mprotect", "pkey_mprotect"):
        f.add_rule(seccomp.ALLOW, name, seccomp.Arg(2, seccomp.MASKED_EQ, X, 0))
    f.add_rule(seccomp.ALLOW, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, 0o100000, 0))
f.load()
os.execv(argv[0], argv)
"""


def seccomp_python() -> str:
    for python in ("/usr/bin/python3", shutil.which("python3")):
        if (
            python
            and subprocess.run(
                [python, "-c", "import seccomp"], capture_output=True, check=False
            ).returncode
            == 0
        ):
            return python
    pytest.skip("no Python with libseccomp's binding (Debian: apt-get install python3-seccomp)")


def sandboxed(tmp_path: Path, unit: str, argv: list[str]) -> list[str]:
    if ANALYZE is None:
        pytest.skip("systemd-analyze is not installed (it lists the syscall groups)")
    script = tmp_path / "sandbox.py"
    script.write_text(SANDBOX)
    return [seccomp_python(), str(script), str(SYSTEMD / unit), ANALYZE, *argv]


def test_daemon_runs_under_the_units_syscall_filter(tmp_path):
    db = tmp_path / "tempctl.db"
    argv = sandboxed(tmp_path, "tempctl.service", [sys.executable, "-m", "tempctl", "run"])
    # Just before the heat wave's 63 °C crossing (~hour 3), 2000x: a throttle within ~1 s.
    with (
        Emulator("heatwave", scale=2000, start_hours=2.9, seed=1) as emu,
        start_daemon(
            emu.urls[0], db, tmp_path, argv=argv, check_interval=0.2, settle=0.4
        ) as daemon,
    ):
        wait_for(
            lambda: throttled(db), timeout=15, what="a throttle command that worked", proc=daemon
        )
        daemon.signal(signal.SIGTERM)
        assert daemon.wait(timeout=10) == 0, daemon.output()
    assert "Operation not permitted" not in daemon.output()


def throttled(db: Path) -> bool:
    """A THROTTLED_* transition whose set_frequency the device accepted."""
    if not db.exists():
        return False
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return (
            conn.execute(
                "SELECT count(*) FROM transitions t JOIN commands c ON c.device = t.device AND "
                "c.ts_ms = t.ts_ms JOIN command_results r ON r.command_id = c.id "
                "WHERE t.to_state LIKE 'THROTTLED%' AND r.outcome = 'ok'"
            ).fetchone()[0]
            > 0
        )
    except sqlite3.OperationalError:
        return False  # the schema is not there yet
    finally:
        conn.close()


def test_datasette_runs_under_the_units_syscall_filter(tmp_path):
    db = tmp_path / "tempctl.db"
    Log(db).close()
    port = free_port()
    argv = sandboxed(
        tmp_path,
        "tempctl-datasette.service",
        [
            sys.executable,
            "-m",
            "tempctl",
            "ui",
            "--db",
            str(db),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
    )
    env = daemon_env("127.0.0.1:9", db, tmp_path)  # hermetic; ui needs no device
    url = f"http://127.0.0.1:{port}/-/versions.json"
    with Proc("datasette", argv, env=env, cwd=tmp_path, out=tmp_path / "ui.out") as ui:
        body = wait_for(lambda: _get(url), timeout=30, what="Datasette's /-/versions.json", proc=ui)
    assert b"datasette" in body, ui.output()


def _get(url: str) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.read()
    except OSError:
        return None
