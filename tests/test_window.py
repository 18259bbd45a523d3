"""The stable window: the SQL query and its incremental twin agree exactly."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tempctl.core.controller import Limits, WindowStats
from tempctl.core.reading import Reading
from tempctl.core.window import StableWindow
from tempctl.store.eventlog import Log

LIM = Limits(
    check_interval=1.0, stable_timeframe=30 / 3600, temp_threshold=63, hysteresis=2, vr_threshold=85
)

temps = st.one_of(
    st.none(), st.floats(50, 66).map(lambda x: round(x * 8) / 8), st.floats(40, 70, allow_nan=False)
)
stream = st.lists(
    st.tuples(
        st.integers(200, 6000),
        temps,
        st.one_of(st.none(), st.sampled_from([60.0, 84.0, 86.0])),
        st.sampled_from([False] * 9 + [True]),
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=120, deadline=None)
@given(stream)
def test_sql_and_incremental_agree(rows):
    lg = Log(":memory:")
    lg.start_run({}, ts_ms=0)
    win = StableWindow(LIM)
    ts = 1_000_000
    for dt, temp, vr, overheat in rows:
        ts += dt
        r = Reading("d", ts, temp=temp, vr_temp=vr if temp is not None else None, overheat=overheat)
        lg.save_reading(r)
        win.add(ts, r.temp, r.vr_temp, r.overheat)
        assert win.stats(ts) == lg.window("d", ts, LIM)
    lg.close()


def test_window_needs_full_coverage(log, limits):
    # 60 s window, polls every second, cool: not ok until 60 s of coverage
    for t in range(0, 61):
        log.save_reading(Reading("d", t * 1000, temp=58.0))
    assert not log.window("d", 59_000, limits).ok(limits)
    assert log.window("d", 61_000, limits).ok(limits)


def test_dead_sensor_never_looks_cool(log, limits):
    for t in range(0, 100):
        log.save_reading(Reading("d", t * 1000, temp=58.0))
    for t in range(100, 200):
        log.save_reading(Reading("d", t * 1000, error="temp=-1"))
    w = log.window("d", 199_000, limits)
    assert w.stable_ms == 0 and not w.ok(limits)


def test_window_is_per_device(log, limits):
    for t in range(0, 100):
        log.save_reading(Reading("a", t * 1000, temp=58.0))
        log.save_reading(Reading("b", t * 1000, temp=64.0))
    assert log.window("a", 99_000, limits).ok(limits)
    assert not log.window("b", 99_000, limits).ok(limits)


def test_exact_average_boundary():
    w = WindowStats(stable_ms=10**9, count=2, sum_mc=61_000 * 2)
    assert w.ok(LIM)  # average exactly threshold - hysteresis passes
    assert not WindowStats(10**9, 2, 61_000 * 2 + 1).ok(LIM)
