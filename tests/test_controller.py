"""The control law, table by table, with an injected clock (times are plain numbers)."""

from __future__ import annotations

import pytest
from harness import Harness

from tempctl.core.controller import Limits, Snapshot, State


def run(limits, rows, frequency=575.0, snapshot=None):
    """rows: (t_s, temp[, kwargs]) -> the harness after feeding them."""
    h = Harness(limits, frequency, snapshot)
    for row in rows:
        t, temp, *rest = row
        h.poll(t, temp, **(rest[0] if rest else {}))
    return h


def freqs(h):
    return [c.frequency for c in h.commands if c.kind == "set_frequency"]


def test_start_without_history_at_max_is_normal(limits):
    h = run(limits, [(0, 55)])
    assert h.state == "NORMAL" and h.commands == []


def test_start_without_history_above_max_clamps(limits):
    h = run(limits, [(0, 55)], frequency=625)
    assert h.state == "NORMAL" and freqs(h) == [575]


def test_start_without_history_below_max_recovers(limits):
    h = run(limits, [(0, 55)], frequency=450)
    assert h.state == "RECOVERING" and h.commands == []


@pytest.mark.parametrize(
    "rows, state, commanded",
    [
        # over the threshold -> FIRST at once
        ([(0, 60), (1, 63.5)], "THROTTLED_1", [490]),
        # exactly at the threshold is not above it
        ([(0, 60), (1, 63.0)], "NORMAL", []),
        # still hot but settle (10 s) not yet passed -> stays at FIRST
        ([(0, 60), (1, 64), (5, 64), (10, 64)], "THROTTLED_1", [490]),
        # still hot after settling -> SECOND
        ([(0, 60), (1, 64), (5, 64), (11, 64)], "THROTTLED_2", [490, 400]),
        # critical -> SECOND at once, no settle
        ([(0, 60), (1, 70)], "THROTTLED_2", [400]),
        ([(0, 60), (1, 64), (2, 71)], "THROTTLED_2", [490, 400]),
        # VR over its threshold acts like ASIC over the threshold
        ([(0, 60), (1, 60, {"vr": 86})], "THROTTLED_1", [490]),
        # the firmware overheat flag is critical even with an invalid temperature
        ([(0, 60), (1, None, {"overheat": True})], "THROTTLED_2", [400]),
    ],
)
def test_throttle_table(limits, rows, state, commanded):
    h = run(limits, rows)
    assert (h.state, freqs(h)) == (state, commanded)


def test_invalid_readings_never_step(limits):
    rows = [(0, 60), (1, 64)] + [(t, None) for t in range(2, 200)]
    h = run(limits, rows)
    assert h.state == "THROTTLED_1" and freqs(h) == [490]


def test_invalid_readings_never_count_as_cool(limits):
    # Throttled, then the sensor dies for minutes: no recovery.
    rows = [(0, 60), (1, 71)] + [(t, None) for t in range(2, 300)]
    h = run(limits, rows)
    assert h.state == "THROTTLED_2" and freqs(h) == [400]


def cool_rows(start, end, temp=58.0):
    return [(t, temp) for t in range(start, end)]


def test_recovery_after_stable_window(limits):
    # 60 s window, 10 s settle, 25 MHz steps: 400 -> 425 ... -> 575 -> NORMAL
    h = run(limits, [(0, 60), (1, 71)] + cool_rows(2, 400))
    assert freqs(h)[:3] == [400, 425, 450]
    assert freqs(h)[-1] == 575 and h.state == "NORMAL"
    recover = [
        t for t in h.transitions if t.to_state == "RECOVERING" and t.from_state != "RECOVERING"
    ]
    assert len(recover) == 1
    # it waited for the whole window: first reading at 2 s, window 60 s
    steps = [t for t in h.transitions if t.reason.startswith("stable")]
    assert steps and steps[0].frequency == 425


def test_one_glitch_does_not_reset_the_window(limits):
    rows = [(0, 60), (1, 71)] + cool_rows(2, 40) + [(40, None)] + cool_rows(41, 64)
    h = run(limits, rows)
    assert h.state == "RECOVERING"


def test_a_hot_reading_resets_the_window(limits):
    rows = [(0, 60), (1, 71)] + cool_rows(2, 40) + [(40, 63.5)] + cool_rows(41, 64)
    h = run(limits, rows)
    assert h.state == "THROTTLED_2"


def test_average_must_be_below_threshold_minus_hysteresis(limits):
    # never above 63 but averaging 62 (> 63 - 2): no recovery
    h = run(limits, [(0, 60), (1, 71)] + cool_rows(2, 200, temp=62.0))
    assert h.state == "THROTTLED_2"


def test_overheat_while_recovering_backs_off_and_remembers_ceiling(limits):
    rows = [(0, 60), (1, 71)] + cool_rows(2, 64)  # -> RECOVERING at 425
    h = run(limits, rows)
    assert h.state == "RECOVERING" and h.device_freq == 425
    h.poll(70, 64.0)  # hot right after the step: back to 400, ceiling 425
    assert h.device_freq == 400 and h.ctl.ceiling == 425
    backoff = h.ctl.backoff_s
    assert backoff == pytest.approx(60.0)  # first back-off = STABLE_TIMEFRAME
    for t in range(71, 120):  # cool, but 425 is forbidden until the back-off ends
        h.poll(t, 58.0)
    assert h.device_freq == 400 and h.state == "RECOVERING"
    for t in range(120, 140):
        h.poll(t, 58.0)
    assert h.device_freq > 400  # retried after the back-off
    # a second failure at the same level doubles the back-off
    h.poll(141, 64.0)
    assert h.ctl.backoff_s == pytest.approx(120.0)


def test_still_hot_after_back_off_goes_to_throttled_path(limits):
    h = run(limits, [(0, 60), (1, 71)] + cool_rows(2, 64) + [(70, 64.0), (75, 64.0), (81, 64.0)])
    assert h.state == "THROTTLED_2" and h.device_freq == 400


def test_never_above_max_or_below_second(limits):
    h = run(limits, [(0, 60)] + [(t, 90 if t % 7 == 0 else 50) for t in range(1, 2000)])
    for c in h.commands:
        if c.kind == "set_frequency":
            assert 400 <= c.frequency <= 575


def test_critical_floor_is_the_only_way_below_second():
    lim = Limits(
        check_interval=1, settle=10, stable_timeframe=60 / 3600, critical_floor=300, law="levels"
    )
    h = run(lim, [(0, 60), (1, 72), (5, 72), (12, 72)])
    assert freqs(h) == [400, 300]
    assert any(e.kind == "alarm" and "MIN_FREQUENCY" in e.message for e in h.events)


def test_firmware_overheat_penalty_is_logged_as_firmware(limits):
    h = run(limits, [(0, 60), (1, 60, {"frequency": 475})])
    change = [e for e in h.events if e.kind == "frequency_change"]
    assert change and change[0].origin == "firmware"
    assert change[0].frequency_from == 575 and change[0].frequency_to == 475


def test_user_change_is_logged_as_user_and_respected(limits):
    h = run(limits, [(0, 60), (1, 60, {"frequency": 525}), (100, 60)])
    change = [e for e in h.events if e.kind == "frequency_change"]
    assert change[0].origin == "user"
    assert h.commands == []  # not fought


def test_user_raising_above_max_is_clamped(limits):
    h = run(limits, [(0, 60), (1, 60, {"frequency": 650})])
    assert freqs(h) == [575]


def test_read_back_mismatch_retries_then_alarms(limits):
    h = Harness(limits)
    h.obey = False  # PATCH answered 200 but not applied
    h.poll(0, 60)
    h.poll(1, 64)
    for t in range(2, 30):
        h.poll(t, 60)
    sets = freqs(h)
    assert sets == [490, 490, 490]  # the intent plus two bounded retries
    assert [c.attempt for c in h.commands] == [1, 2, 3]
    assert any(e.kind == "alarm" and "not applied" in e.message for e in h.events)


def test_restart_mode_restarts_within_hourly_limit():
    lim = Limits(
        check_interval=1,
        settle=1,
        stable_timeframe=5 / 3600,
        apply="restart",
        max_restarts_per_hour=2,
    )
    h = run(lim, [(0, 60)] + [(t, 64 if t % 20 < 10 else 55) for t in range(1, 600)])
    restarts = [c for c in h.commands if c.kind == "restart"]
    assert 1 <= len(restarts) <= 2
    assert any(e.kind == "restart" and "MAX_RESTARTS" in e.message for e in h.events)


def test_auto_mode_restarts_only_when_firmware_cannot_change_live(limits):
    h = Harness(limits)
    h.ctl.live_capable = False
    h.poll(0, 60)
    h.poll(1, 64)
    assert [c.kind for c in h.commands] == ["set_frequency", "restart"]
    h2 = run(limits, [(0, 60), (1, 64)])
    assert [c.kind for c in h2.commands] == ["set_frequency"]


def test_dry_run_decides_without_the_device_changing():
    lim = Limits(
        check_interval=1, settle=10, stable_timeframe=60 / 3600, dry_run=True, law="levels"
    )
    h = Harness(lim)
    h.obey = False
    for t, temp in [(0, 60), (1, 64), (12, 64)]:
        h.poll(t, temp)
    assert freqs(h) == [490, 400] and h.state == "THROTTLED_2"
    assert not [e for e in h.events if e.kind in ("frequency_change", "alarm")]


def test_restore_resumes_throttled_and_reapplies(limits):
    snap = Snapshot(State.THROTTLED_2, 400.0, last_change_ms=0)
    h = run(limits, [(1000, 60)], frequency=575, snapshot=snap)  # device rebooted into 575
    assert h.state == "THROTTLED_2" and freqs(h) == [400]


def test_restore_adopts_a_lower_device_frequency(limits):
    snap = Snapshot(State.THROTTLED_1, 490.0, last_change_ms=0)
    h = run(limits, [(1000, 60)], frequency=400, snapshot=snap)
    assert h.state == "THROTTLED_1" and h.commands == [] and h.ctl.frequency == 400


def test_reboot_is_detected_from_uptime(limits):
    h = run(limits, [(0, 60, {"uptime": 500}), (1, None, {"uptime": 3})])
    assert [e.origin for e in h.events if e.kind == "reboot"] == ["device"]


def test_identity_change_is_an_alarm_and_a_fresh_start(limits):
    from tempctl.core.reading import Reading

    h = Harness(limits)
    d1 = h.ctl.step(Reading("dev", 0, temp=60, frequency=575, mac="AA", hostname="a"), 0)
    h.ctl.step(Reading("dev", 1000, temp=64, frequency=575, mac="AA", hostname="a"), 1000)
    assert h.ctl.current is State.THROTTLED_1  # the old device's state
    d2 = h.ctl.step(Reading("dev", 2000, temp=60, frequency=490, mac="BB", hostname="b"), 2000)
    # first sight: an info event that the log keeps (restore reads it back), no alarm
    assert [(e.kind, e.level) for e in d1.events] == [("device", "info")]
    assert d2.events[0].kind == "identity" and d2.events[0].level == "alarm"
    assert '"mac": "BB"' in d2.events[1].message
    # the new device starts with no history: below MAX -> RECOVERING at what it runs
    assert d2.transition.reason.startswith("start: no history")
    assert h.ctl.current is State.RECOVERING and h.ctl.frequency == 490


def test_a_swap_across_a_restart_is_seen_from_the_persisted_identity(limits):
    from tempctl.core.reading import Reading

    snap = Snapshot(State.THROTTLED_2, 400.0, last_change_ms=0, identity=("AA", "a"))
    h = Harness(limits, 400, snap)
    d = h.ctl.step(Reading("dev", 5000, temp=60, frequency=400, mac="BB", hostname="b"), 5000)
    assert d.events[0].kind == "identity" and d.events[0].level == "alarm"
    assert h.ctl.current is State.RECOVERING  # not THROTTLED_2 from the other device's log


@pytest.mark.parametrize("law", ["levels", "model"])
def test_law_is_data_and_every_row_reachable(law):
    # Every condition names a Facts property; every state is some row's destination.
    from tempctl.core.law import LAWS, Facts

    rows = LAWS[law]
    for row in rows:
        for c in row.when:
            assert isinstance(getattr(Facts, c), property), c
    assert {row.dest for row in rows} == set(State)


def test_hot_first_poll_keeps_one_row_with_the_start(limits):
    h = run(limits, [(0, 64)], frequency=575)  # the first poll is already hot
    assert len(h.transitions) == 1
    t = h.transitions[0]
    assert (t.from_state, t.to_state, t.frequency) == ("NORMAL", "THROTTLED_1", 490)
    assert t.reason.startswith("start:") and "above threshold" in t.reason
