"""A frequency the user lowers by hand in AxeOS is kept as a cap (issue 23.8).

The real Daemon on a fake clock polls the emulator over loopback in a 25 °C room; a person
PATCHes the emulator down to 450 MHz as AxeOS's settings page does. With
TEMPCTL_USER_CAP=keep (the default) tempctl stays at or below it for hours, across a
restart, and shows it (`tempctl status`, the log's ``user_caps`` view); the user raising it
again lifts the cap. TEMPCTL_USER_CAP=off keeps tempctl 0.2's behaviour: it climbs back.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from dataclasses import replace

import requests
from click.testing import CliRunner

from tempctl.cli import cli
from tempctl.config import Device, Settings
from tempctl.core.clock import FakeClock
from tempctl.core.controller import Controller, Limits
from tempctl.core.limits import WindowStats
from tempctl.core.reading import Reading
from tempctl.daemon.loop import Daemon
from tempctl.offline.replay import check
from tempctl.sim.emulator import Emulator
from tempctl.sim.scenario import load_scenario
from tempctl.store.eventlog import Log
from tempctl.ui import server as ui

START_MS = 1_767_225_600_000  # 2026-01-01 00:00 UTC
# the "constant" scenario (a Gamma at 575 MHz, fixed fan) in the 25 °C room, all day
COOL_ROOM = replace(
    load_scenario("constant"), name="cool", duration_s=86_400.0, ambient_points=((0.0, 25.0),)
)
INTERVAL_S = 30.0


class ScriptedClock(FakeClock):
    """A fake clock that does what a person does at given seconds after the start."""

    def __init__(self, actions: dict[float, object]):
        super().__init__(start_ms=START_MS)
        self.actions = dict(actions)

    def elapsed_s(self) -> float:
        return (self.now_ms() - START_MS) / 1000

    def wait(self, seconds: float, stop: threading.Event) -> bool:
        stopped = super().wait(seconds, stop)
        for at in sorted(a for a in self.actions if a <= self.elapsed_s()):
            self.actions.pop(at)()
        return stopped


def set_in_axeos(emu: Emulator, mhz: int) -> None:
    """What AxeOS's settings page sends when a person saves a frequency."""
    r = requests.patch(emu.urls[0] + "/api/system", json={"frequency": mhz}, timeout=10)
    assert r.status_code == 200, r.text


def run_daemon(emu, db, clock, hours: float, **settings) -> None:
    s = Settings(
        check_interval=INTERVAL_S,
        devices=(Device("gamma", emu.urls[0]),),
        sources={},
        **settings,
    )
    log = Log(db)
    try:
        Daemon(s, eventlog=log, clock=clock).run(max_polls=int(hours * 3600 / INTERVAL_S))
    finally:
        log.close()


def frequencies(db, after_s: float, before_s: float = 1e9) -> list[float]:
    """The device's reported frequency in (after_s, before_s) seconds after the start."""
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT frequency FROM readings WHERE valid = 1 AND ts_ms > ? AND ts_ms < ? ORDER BY id",
        (START_MS + int(after_s * 1000), START_MS + int(before_s * 1000)),
    ).fetchall()
    conn.close()
    return [r[0] for r in rows]


def test_a_frequency_lowered_in_axeos_stays_for_hours_and_across_a_restart(tmp_path):
    db = tmp_path / "tempctl.db"
    clock = ScriptedClock({600: lambda: set_in_axeos(emu, 450)})
    with Emulator(COOL_ROOM, clock=clock.monotonic, seed=5) as emu:
        run_daemon(emu, db, clock, hours=4)
        clock.actions = {clock.elapsed_s() + 3600: lambda: set_in_axeos(emu, 575)}
        run_daemon(emu, db, clock, hours=2)  # a restart: the cap is read back from the log
    raised_at = 5 * 3600  # an hour into the second run
    assert set(frequencies(db, 0, 600)) == {575.0}  # MAX_FREQUENCY before
    held = frequencies(db, 600 + INTERVAL_S, raised_at)
    assert len(held) > 500 and set(held) == {450.0}  # 4 h 50 min, a restart between
    assert frequencies(db, raised_at + INTERVAL_S)[-1] == 575.0  # the user's raise stands
    conn = sqlite3.connect(db)
    sent = [
        f
        for (f,) in conn.execute(
            "SELECT frequency FROM commands WHERE kind = 'set_frequency' AND ts_ms < ?",
            (START_MS + int(raised_at * 1000),),
        )
    ]
    assert all(f <= 450.0 for f in sent), sent
    caps = conn.execute(
        "SELECT run_id, origin, frequency_to, message FROM events WHERE kind = 'user_cap' "
        "ORDER BY id"
    ).fetchall()
    assert [c[:3] for c in caps] == [(1, "user", 450.0), (2, "user", None)], caps
    assert caps[0][3].startswith("user cap 450 MHz, set in AxeOS at 2026-01-01 00:10:")
    assert "until it is raised in AxeOS" in caps[0][3]
    assert "lifted: raised to 575 MHz in AxeOS" in caps[1][3]
    change = conn.execute(
        "SELECT origin, frequency_from, frequency_to FROM events "
        "WHERE kind = 'frequency_change' ORDER BY id LIMIT 1"
    ).fetchone()
    assert change == ("user", 575.0, 450.0)
    conn.close()
    assert check(sqlite3.connect(db)).ok  # replay restores the cap as the daemon did


def test_status_and_the_log_show_the_cap(tmp_path):
    db = tmp_path / "tempctl.db"
    clock = ScriptedClock({600: lambda: set_in_axeos(emu, 450)})
    with Emulator(COOL_ROOM, clock=clock.monotonic, seed=5) as emu:
        run_daemon(emu, db, clock, hours=1)
    res = CliRunner().invoke(cli, ["status", "--db", str(db), "--json"], env={"TEMPCTL_CONFIG": ""})
    assert res.exit_code == 0, res.output
    row = json.loads(res.output)[0]
    assert row["user_cap"]["mhz"] == 450.0
    assert row["user_cap"]["text"].startswith("user cap 450 MHz, set in AxeOS at 2026-01-01")
    res = CliRunner().invoke(cli, ["status", "--db", str(db)], env={"TEMPCTL_CONFIG": ""})
    assert "user cap 450 MHz, set in AxeOS at 2026-01-01 00:10:" in res.output, res.output
    conn = sqlite3.connect(db)
    view = conn.execute("SELECT device, cap_mhz, shown FROM user_caps").fetchall()
    assert view == [("gamma", 450.0, view[0][2])]
    assert view[0][2].startswith("user cap 450 MHz, set in AxeOS at 2026-01-01 00:10:")
    # the dashboard's chart, its query as the dashboard runs it with no filter set
    dash = ui.render_metadata("tempctl")["plugins"]["datasette-dashboards"]
    sql = re.sub(r"\[\[.*?\]\]", "", dash["tempctl-history"]["charts"]["user_caps"]["query"])
    rows = conn.execute(sql, {"device": "", "date_start": "", "date_end": ""}).fetchall()
    assert rows == [("gamma", view[0][2], "until raised in AxeOS")]


def test_user_cap_off_climbs_back_as_before(tmp_path):
    db = tmp_path / "tempctl.db"
    clock = ScriptedClock({600: lambda: set_in_axeos(emu, 450)})
    with Emulator(COOL_ROOM, clock=clock.monotonic, seed=5) as emu:
        run_daemon(emu, db, clock, hours=2, user_cap="off")
    after = frequencies(db, 600 + INTERVAL_S)
    assert after[0] == 450.0 and after[-1] == 575.0, (after[0], after[-1])
    message = (
        sqlite3.connect(db)
        .execute("SELECT message FROM events WHERE kind = 'frequency_change'")
        .fetchone()[0]
    )
    assert "TEMPCTL_USER_CAP=off: tempctl works from it and climbs back" in message
    # a log from before the setting (no user_cap in its runs.config) climbed back: replay
    # reproduces it as recorded
    conn = sqlite3.connect(db)
    assert check(conn).ok
    conn.execute("UPDATE runs SET config = json_remove(config, '$.user_cap')")
    conn.commit()
    assert check(conn).ok


def test_a_cap_with_hours_expires_then_tempctl_climbs():
    lim = Limits(user_cap_hours=2.0, check_interval=INTERVAL_S)
    c = Controller(lim, "d")
    f, events, top = 575.0, [], []
    calm = WindowStats(10**9, 100, 50_000 * 100)
    for i in range(int(4 * 3600 / INTERVAL_S)):
        t = int(i * INTERVAL_S * 1000)
        if i == 10:
            f = 450.0  # the user, in AxeOS
        d = c.step(Reading("d", t, temp=50.0, frequency=f), t, lambda: calm)
        events += [e for e in d.events if e.kind == "user_cap"]
        f = next((x.frequency for x in d.commands if x.frequency), f)
        top.append((t, f))
    lifted = 300_000 + 2 * 3_600_000
    assert max(x for t, x in top if 300_000 <= t < lifted) == 450.0
    assert top[-1][1] > 450.0  # climbed once the 2 h were up
    assert [e.frequency_to for e in events] == [450.0, None]
    assert "until 1970-01-01 02:05:00 UTC (TEMPCTL_USER_CAP_HOURS=2)" in events[0].message
    assert "expired after 2 h" in events[1].message
