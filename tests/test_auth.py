"""HTTP Basic auth for devices with a password (issue 16 item 5; open ESP-Miner PR #1750).

PR #1750 answers an unauthenticated request with 401, body ``{"authRequired":1}`` and
``WWW-Authenticate: Basic realm="Bitaxe"`` (axeos-api.md §14); its check_creds compares
only the password. Here a real loopback server (pytest-httpserver) plays that firmware.
The password lives in a file named by TEMPCTL_DEVICE_PASSWORD_FILE and is never logged,
never in an error, and never in `tempctl config` output (only the path is).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import sqlite3

import pytest
from click.testing import CliRunner
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from tempctl.cli import cli
from tempctl.config import FIELDS
from tempctl.device import AuthRequired, AxeOSError, Client, read_password_file
from tempctl.resources import PACKAGE_DIR

INFO = "/api/system/info"
PASSWORD = "Sälzburg-42:colon"  # non-ASCII and a colon: sent as UTF-8, split at the first ':'
GAMMA = json.loads((PACKAGE_DIR / "data" / "bodies" / "v2.15.0_gamma-602_BM1370.json").read_text())


@pytest.fixture(scope="module")
def server():
    srv = HTTPServer(host="127.0.0.1", port=0, threaded=True)
    srv.start()
    yield srv
    srv.clear()
    srv.stop()


@pytest.fixture
def device(server):
    """A device with a password, as PR #1750's http_auth_validate answers."""
    server.clear()
    seen: list[str | None] = []

    def guarded(request: Request) -> Response:
        header = request.headers.get("Authorization")
        seen.append(header)
        if header and header.startswith("Basic "):
            user_pass = base64.b64decode(header[6:]).decode("utf-8")
            if user_pass.partition(":")[2] == PASSWORD:
                if request.method == "PATCH":
                    return Response("", status=200, content_type="text/html")
                return Response(json.dumps(GAMMA), content_type="application/json")
        return Response(
            '{"authRequired":1}',
            status=401,
            content_type="application/json",
            headers={"WWW-Authenticate": 'Basic realm="Bitaxe"'},
        )

    server.expect_request(INFO).respond_with_handler(guarded)
    server.expect_request("/api/system", method="PATCH").respond_with_handler(guarded)
    server.seen = seen
    yield server
    server.clear()


def client(server, **kwargs) -> Client:
    return Client(f"http://127.0.0.1:{server.port}", retries=0, **kwargs)


def test_401_without_a_password_says_what_to_set(device):
    with client(device) as c, pytest.raises(AuthRequired) as info:
        c.read("gamma", 0)
    error = info.value
    assert error.kind == "auth" and error.status == 401 and isinstance(error, AxeOSError)
    assert "device wants a password: set TEMPCTL_DEVICE_PASSWORD_FILE" in str(error)
    assert "private-range" not in str(error)  # the old hint blamed the network check
    assert device.seen == [None]


def test_with_the_password_reads_and_writes(device, caplog):
    caplog.set_level(logging.DEBUG)
    with client(device, password=PASSWORD) as c:
        assert c.read("gamma", 0).temp == GAMMA["temp"]
        c.set_frequency(490)
        assert PASSWORD not in repr(c)
    assert len(device.seen) == 2 and all(h and h.startswith("Basic ") for h in device.seen)
    assert PASSWORD not in caplog.text


def test_a_wrong_password_is_its_own_clear_error(device):
    with client(device, password="wrong") as c, pytest.raises(AuthRequired) as info:
        c.set_frequency(490)
    assert "refused the password" in str(info.value)
    assert "wrong" not in str(info.value)


def test_401_on_a_write_is_auth_not_rejected(device):
    with client(device) as c, pytest.raises(AuthRequired, match="TEMPCTL_DEVICE_PASSWORD_FILE"):
        c.set_fields({"frequency": 490})


def test_read_password_file(tmp_path):
    path = tmp_path / "pw"
    path.write_text(PASSWORD + "\n")
    assert read_password_file(path) == PASSWORD
    path.write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        read_password_file(path)
    with pytest.raises(ValueError, match="password file"):
        read_password_file(tmp_path / "missing")


def test_config_shows_the_path_never_the_password(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("TEMPCTL_") or name in {f.env for f in FIELDS}:
            monkeypatch.delenv(name)
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("TEMPCTL_CONFIG", str(empty))
    path = tmp_path / "device-password"
    path.write_text(PASSWORD + "\n")
    runner = CliRunner()
    env = {"TEMPCTL_DEVICE_PASSWORD_FILE": str(path), "BITAXE_IP": "10.0.0.5"}
    for args in (["config"], ["config", "--json"]):
        result = runner.invoke(cli, args, env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert str(path) in result.output and PASSWORD not in result.output
    info = json.loads(runner.invoke(cli, ["config", "--json"], env=env).stdout)
    assert info["settings"]["device_password_file"]["value"] == str(path)


def test_a_missing_password_file_exits_2_naming_the_field(tmp_path, monkeypatch):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("TEMPCTL_CONFIG", str(empty))
    missing = tmp_path / "nope"
    result = CliRunner().invoke(
        cli, ["config", "--device-password-file", str(missing), "--bitaxe-ip", "10.0.0.5"]
    )
    assert result.exit_code == 2
    assert "--device-password-file" in result.output or "device_password_file" in result.output
    assert str(missing) in result.output


@pytest.mark.slow
@pytest.mark.parametrize("with_password", [True, False])
def test_the_daemon_sends_the_password_from_the_file(tmp_path, with_password):
    """`tempctl run` (real subprocess) against a device that wants a password."""
    import procs

    with procs.fake_device() as dev:
        original = dev._info

        def guarded(request):
            header = request.headers.get("Authorization", "")
            if header.startswith("Basic "):
                if base64.b64decode(header[6:]).decode().partition(":")[2] == PASSWORD:
                    return original(request)
            return Response(
                '{"authRequired":1}',
                status=401,
                content_type="application/json",
                headers={"WWW-Authenticate": 'Basic realm="Bitaxe"'},
            )

        dev.server.clear_all_handlers()
        dev.server.expect_request(INFO).respond_with_handler(guarded)
        secret = tmp_path / "device-password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o600)
        extra = {"TEMPCTL_DEVICE_PASSWORD_FILE": str(secret)} if with_password else {}
        db = tmp_path / "tempctl.db"
        d = procs.start_daemon(dev.address, db, tmp_path, env_extra=extra)
        v = procs.LogView(db)
        try:
            procs.wait_for(lambda: v.count("readings") >= 3, 30, "three polls", d)
            procs.assert_clean_exit(d)
        finally:
            d.stop()
    rows = v.readings()
    if with_password:
        assert all(r["valid"] == 1 for r in rows)
    else:
        assert all(r["valid"] == 0 for r in rows)
        assert all(r["error"].startswith("auth: ") for r in rows)
        assert all("set TEMPCTL_DEVICE_PASSWORD_FILE" in r["error"] for r in rows)
    output = (tmp_path / "daemon.out").read_text()
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    assert PASSWORD not in output and PASSWORD not in dump


# --- issue 23 item 9: a password file others can read warns; a changed password is picked up --


@pytest.mark.parametrize(("mode", "warns"), [(0o644, True), (0o640, True), (0o600, False)])
def test_a_password_file_others_can_read_warns(tmp_path, monkeypatch, mode, warns):
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    monkeypatch.setenv("TEMPCTL_CONFIG", str(empty))
    path = tmp_path / "device-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(mode)
    env = {"TEMPCTL_DEVICE_PASSWORD_FILE": str(path), "BITAXE_IP": "127.0.0.1"}
    result = CliRunner().invoke(cli, ["config", "--json"], env=env)
    assert result.exit_code == 0, result.output
    warnings = json.loads(result.stdout)["warnings"]
    expected = [
        f"TEMPCTL_DEVICE_PASSWORD_FILE={path} (environment): readable by other users "
        f"(mode {mode:04o}): chmod 600 it"
    ]
    assert warnings == (expected if warns else [])
    assert PASSWORD not in result.output


@pytest.fixture
def rotating(server):
    """A device whose password the test changes (``server.password``); counts requests."""
    server.clear()
    server.password = PASSWORD
    server.calls = 0

    def guarded(request: Request) -> Response:
        server.calls += 1
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            if base64.b64decode(header[6:]).decode().partition(":")[2] == server.password:
                if request.method == "PATCH":
                    return Response("", status=200, content_type="text/html")
                return Response(json.dumps(GAMMA), content_type="application/json")
        return Response('{"authRequired":1}', status=401, content_type="application/json")

    server.expect_request(INFO).respond_with_handler(guarded)
    server.expect_request("/api/system", method="PATCH").respond_with_handler(guarded)
    yield server
    server.clear()


def test_a_changed_password_file_is_read_again_after_a_401(rotating, tmp_path):
    from tempctl.device import password_from

    path = tmp_path / "device-password"
    path.write_text(PASSWORD + "\n")
    with client(rotating, password=password_from(path)) as c:
        assert c.read("gamma", 0).valid
        # The user changes the password in AxeOS, then in the file: no restart needed.
        rotating.password = "n3w-password"
        path.write_text("n3w-password\n")
        rotating.calls = 0
        assert c.read("gamma", 1).valid
        assert rotating.calls == 2  # the 401, then once more with the new password
        rotating.password = "th1rd"
        path.write_text("n3w-password-but-longer\n")  # a wrong password: one retry, no loop
        rotating.calls = 0
        with pytest.raises(AuthRequired, match="refused the password"):
            c.read("gamma", 2)
        assert rotating.calls == 2
        rotating.calls = 0
        for ts in (3, 4):  # still refused, file unchanged: not read again, not re-sent
            with pytest.raises(AuthRequired):
                c.read("gamma", ts)
        assert rotating.calls == 2
        path.write_text("th1rd\n")  # the file changes during the run of 401s: picked up
        rotating.calls = 0
        c.set_frequency(490)
        assert rotating.calls == 2


def test_a_password_file_others_can_read_is_still_used(rotating, tmp_path):
    """The warning is a warning: the daemon keeps working with such a file."""
    from tempctl.device import password_from

    path = tmp_path / "device-password"
    path.write_text(PASSWORD + "\n")
    path.chmod(0o644)
    with client(rotating, password=password_from(path)) as c:
        assert c.read("gamma", 0).valid


@pytest.mark.slow
def test_the_daemon_picks_up_a_changed_password_without_a_restart(tmp_path):
    """`tempctl run` (real subprocess): the password changes on the device, then in the file;
    the daemon works again without a restart. The file is readable by others: it warns."""
    import procs

    current = {"password": PASSWORD}
    with procs.fake_device() as dev:
        original = dev._info

        def guarded(request):
            header = request.headers.get("Authorization", "")
            if header.startswith("Basic "):
                if base64.b64decode(header[6:]).decode().partition(":")[2] == current["password"]:
                    return original(request)
            return Response('{"authRequired":1}', status=401, content_type="application/json")

        dev.server.clear_all_handlers()
        dev.server.expect_request(INFO).respond_with_handler(guarded)
        secret = tmp_path / "device-password"
        secret.write_text(PASSWORD + "\n")
        secret.chmod(0o644)
        db = tmp_path / "tempctl.db"
        extra = {"TEMPCTL_DEVICE_PASSWORD_FILE": str(secret)}
        d = procs.start_daemon(dev.address, db, tmp_path, env_extra=extra)
        v = procs.LogView(db)
        try:
            procs.wait_for(lambda: v.count("readings", "valid = 1") >= 2, 30, "valid polls", d)
            current["password"] = "n3w-Password"  # changed in AxeOS
            procs.wait_for(lambda: v.count("readings", "valid = 0") >= 2, 30, "refused polls", d)
            secret.write_text("n3w-Password\n")  # ... and then in the file
            refused = v.value("SELECT max(id) FROM readings")
            procs.wait_for(
                lambda: v.count("readings", "valid = 1 AND id > ?", refused) >= 2,
                30,
                "valid polls with the new password",
                d,
            )
            procs.assert_clean_exit(d)
        finally:
            d.stop()
    output = (tmp_path / "daemon.out").read_text()
    assert "readable by other users (mode 0644): chmod 600 it" in output
    with sqlite3.connect(db) as conn:
        dump = "\n".join(conn.iterdump())
    for text in (output, dump):
        assert PASSWORD not in text and "n3w-Password" not in text
