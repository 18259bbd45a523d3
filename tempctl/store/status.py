"""What `tempctl status` shows, computed from the log alone (works while the daemon runs)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import fields
from datetime import UTC

from tempctl.core import usercap
from tempctl.core.controller import Controller, Limits
from tempctl.core.evidence import exclusion
from tempctl.core.window import query_window
from tempctl.store.eventlog import restore
from tempctl.store.rows import LoggedReading, reading_sql

EXPLAIN_WINDOW_MS = 3_600_000  # readings that warm the model's estimate for `doing`


def run_limits(conn: sqlite3.Connection, device: str | None = None) -> Limits:
    """The limits of the latest run (per-device overrides applied when recorded)."""
    row = conn.execute("SELECT config FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        return Limits()
    config = json.loads(row[0])
    values = {f.name: config[f.name] for f in fields(Limits) if f.name in config}
    for dev in config.get("devices") or []:
        if isinstance(dev, dict) and dev.get("name") == device:
            for k, v in (dev.get("overrides") or {}).items():
                if k in Limits.__dataclass_fields__:
                    values[k] = v
    return Limits(**values)


def device_status(conn: sqlite3.Connection, device: str, now_ms: int) -> dict:
    limits = run_limits(conn, device)
    t = conn.execute(
        "SELECT to_state, ts_ms, frequency, reason, ceiling, ceiling_until_ms, backoff_s "
        "FROM transitions WHERE device = ? ORDER BY id DESC LIMIT 1",
        (device,),
    ).fetchone()
    r = conn.execute(
        "SELECT ts_ms, valid, temp, vr_temp, frequency, hashrate, error FROM readings "
        "WHERE device = ? ORDER BY id DESC LIMIT 1",
        (device,),
    ).fetchone()
    c = conn.execute(
        "SELECT ts_ms, kind, frequency, reason, outcome, error FROM command_log "
        "WHERE device = ? ORDER BY id DESC LIMIT 1",
        (device,),
    ).fetchone()
    doing = explain(conn, device, limits)
    snap = restore(conn, device)
    cap = user_cap(snap, limits)
    # Judge the window as of the last reading, as the daemon did.
    at = r[0] if r else now_ms
    w = query_window(conn, device, at, limits)
    out = {
        "device": device,
        "state": t[0] if t else None,
        "since_ms": t[1] if t else None,
        "frequency": (t[2] if not cap else min(t[2], cap["mhz"])) if t else None,
        "reason": t[3] if t else None,
        "ceiling": t[4] if t and t[5] and t[5] > now_ms else None,
        "ceiling_until_ms": t[5] if t and t[5] and t[5] > now_ms else None,
        "backoff_s": t[6] if t else None,
        "last_reading": None,
        "stable_min": round(min(w.stable_ms, limits.window_ms) / 60000, 1),
        "window_min": round(limits.window_ms / 60000, 1),
        "window_avg": round(w.sum_mc / w.count / 1000, 2) if w.count else None,
        "stable_ok": w.ok(limits),
        "last_command": None,
        "doing": doing,
        "user_cap": cap,
        "power_cap": power_cap(conn, device, limits, snap),
    }
    if r:
        out["last_reading"] = {
            "ts_ms": r[0],
            "age_s": round((now_ms - r[0]) / 1000, 1),
            "valid": bool(r[1]),
            "temp": r[2],
            "vr_temp": r[3],
            "frequency": r[4],
            "hashrate": r[5],
            "error": r[6],
        }
    if c:
        out["last_command"] = {
            "ts_ms": c[0],
            "kind": c[1],
            "frequency": c[2],
            "reason": c[3],
            "outcome": c[4],
            "error": c[5],
        }
    return out


def user_cap(snap, limits: Limits) -> dict | None:
    """The frequency a user set in AxeOS that tempctl keeps as a cap (core/usercap.py)."""
    if snap is None or snap.user_cap is None or limits.user_cap == "off":
        return None
    hours = limits.user_cap_hours
    return {
        "mhz": snap.user_cap,
        "set_ms": snap.user_cap_ms,
        "until_ms": snap.user_cap_ms + int(hours * 3_600_000) if hours > 0 else None,
        "text": usercap.text(snap.user_cap, snap.user_cap_ms),
    }


def power_cap(conn: sqlite3.Connection, device: str, limits: Limits, snap) -> dict | None:
    """TEMPCTL_POWER_LIMIT and this device's share of TEMPCTL_POWER_BUDGET (the last
    ``power_budget`` event of the latest run), and the frequency ceiling they set (the last
    ``power_cap`` event, as restore reads it; MAX_FREQUENCY while the cap does not bind)."""
    row = conn.execute("SELECT id, config FROM runs ORDER BY id DESC LIMIT 1").fetchone()
    budget = float(json.loads(row[1]).get("power_budget") or 0) if row else 0.0
    own = limits.power_limit if limits.power_limit > 0 else None
    if own is None and budget <= 0:
        return None
    share = None
    if budget > 0:
        got = conn.execute(
            "SELECT frequency_to FROM events WHERE device = ? AND kind = 'power_budget' "
            "AND run_id = ? ORDER BY id DESC LIMIT 1",
            (device, row[0]),
        ).fetchone()
        share = got[0] if got else None
    caps = [w for w in (own, share) if w is not None]
    mhz = snap.power_cap if snap is not None else None
    return {
        "limit_w": own,
        "budget_w": budget if budget > 0 else None,
        "share_w": share,
        "watts": min(caps) if caps else None,
        "mhz": limits.max_frequency if mhz is None else mhz,
        "binds": mhz is not None,
    }


def power_text(p: dict) -> str:
    """'15 W (TEMPCTL_POWER_LIMIT), share 14.5 W of TEMPCTL_POWER_BUDGET 30 W: ceiling ...'"""
    parts = []
    if p["limit_w"] is not None:
        parts.append(f"{p['limit_w']:g} W (TEMPCTL_POWER_LIMIT)")
    if p["budget_w"] is not None:
        share = "not allocated yet" if p["share_w"] is None else f"{p['share_w']:g} W"
        parts.append(f"share {share} of TEMPCTL_POWER_BUDGET {p['budget_w']:g} W")
    if p["binds"]:
        ceiling = f"ceiling {p['mhz']:g} MHz"
    else:
        ceiling = f"not binding (MAX_FREQUENCY {p['mhz']:g} MHz fits)"
    return ", ".join(parts) + ": " + ceiling


def explain(conn: sqlite3.Connection, device: str, limits: Limits) -> str | None:
    """What the law is doing, in words: the controller restored from the log (state,
    frequency, learned model), its model warmed on the last hour of evidence."""
    snap = restore(conn, device)
    if snap is None:
        return None
    ctl = Controller(limits, device, snapshot=snap)
    last = conn.execute("SELECT max(ts_ms) FROM readings WHERE device = ?", (device,)).fetchone()[0]
    if last is None:
        return ctl.explain()
    for row in conn.execute(
        reading_sql(conn) + "WHERE device = ? AND ts_ms > ? ORDER BY ts_ms, id",
        (device, last - EXPLAIN_WINDOW_MS),
    ):
        r = LoggedReading._make(row)
        if not r.backfilled and exclusion(r) is None:
            ctl.model.observe(
                r.ts_ms, r.temp, r.power, r.frequency, r.core_voltage, r.fan_pct, r.autofan
            )
    return ctl.explain()


def format_status(s: dict) -> str:
    from datetime import datetime

    def when(ms):
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    lines = [f"{s['device']}"]
    if s["state"]:
        lines.append(f"  state      {s['state']} since {when(s['since_ms'])} ({s['reason']})")
        lines.append(f"  frequency  {s['frequency']:g} MHz (target)")
        if s.get("doing"):
            lines.append(f"  doing      {s['doing']}")
        cap = s.get("user_cap")
        if cap:
            until = "raised in AxeOS" if cap["until_ms"] is None else when(cap["until_ms"])
            lines.append(f"  cap        {cap['text']} (kept until {until})")
        if s.get("power_cap"):
            lines.append(f"  power cap  {power_text(s['power_cap'])}")
    else:
        lines.append("  state      (no decision logged yet)")
    r = s["last_reading"]
    if r:
        temp = f"{r['temp']:.2f} °C" if r["temp"] is not None else f"invalid ({r['error']})"
        vr = f", VR {r['vr_temp']:g} °C" if r["vr_temp"] is not None else ""
        lines.append(f"  reading    {temp}{vr}, {r['frequency']} MHz, {r['age_s']} s ago")
    lines.append(
        f"  stable     {s['stable_min']:g} of {s['window_min']:g} min"
        + (f" (avg {s['window_avg']:.2f} °C)" if s["window_avg"] is not None else "")
        + (" — ready to restore" if s["stable_ok"] else "")
    )
    if s["ceiling"]:
        lines.append(
            f"  ceiling    {s['ceiling']:g} MHz until {when(s['ceiling_until_ms'])} "
            f"(back-off {s['backoff_s'] / 60:g} min)"
        )
    c = s["last_command"]
    if c:
        freq = f" {c['frequency']:g} MHz" if c["frequency"] else ""
        lines.append(
            f"  command    {c['kind']}{freq} at {when(c['ts_ms'])}: {c['outcome'] or 'pending'}"
            + (f" ({c['error']})" if c["error"] else "")
        )
    return "\n".join(lines)
