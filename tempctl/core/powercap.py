"""The power cap (issue 21.3): a device's measured power held under a limit in watts.

Two sources narrow it, the smaller wins: TEMPCTL_POWER_LIMIT (per device) and the device's
share of TEMPCTL_POWER_BUDGET, which the daemon allocates across its devices with
``allocate`` and hands each controller with ``set_share`` (logged as a ``power_budget``
event, so replay hands the same share at the same reading).

The cap is a frequency ceiling, like the user cap: ``usercap.narrow`` lowers
``Controller.limits.max_frequency`` to it, and the law's ``above_max`` row takes the device
down to it; every other row already stops at ``max_frequency``. Under the levels law
two rows of its own (law.py) do the same: above the ceiling, down to it in the same state;
NORMAL under a ceiling that rose restores by TEMPCTL_STEP when cool. The ceiling comes from the
learned power law (model.py: P = p0 + k·f·V²·(1 + leak·(T − 60))) around a measured point:
the median of the last readings at the present frequency and voltage, never one reading
(a 900 W spike, issue 20, moves no median of three). Between AIM and the cap nothing moves,
so the grid (6.25 MHz, ~1 % of a Gamma's power) does not make it flap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import median

from tempctl.core import usercap
from tempctl.core.decision import Event
from tempctl.core.limits import FREQ_EPS, PLL_STEP
from tempctl.core.model import P0_SHARE, POWER_MAX_W

__all__ = [
    "AIM",
    "Demand",
    "allocate",
    "below_second",
    "ceiling_for",
    "changed",
    "demand",
    "init",
    "limit_w",
    "reallocate",
    "set_share",
    "share_event",
    "shown",
    "volts",
    "watch",
]

AIM = 0.985  # aim this share of the cap: one PLL step of a Gamma is ~1 % of its power
SAMPLES = 3  # readings at one (f, V) before its power counts: the median of three
KEEP = 5


def init(c) -> None:
    c.power_mhz = None  # the ceiling in force (MHz), None: no power cap binds
    c.power_share = None  # W: this device's share of the daemon's budget (None: no budget)
    c.power_seen = ((None, None), ())  # ((f, mV), powers at it)
    if not hasattr(c, "voltage_for"):
        c.voltage_for = None  # the governor's need(f, mV now, f now) -> mV (driver.py)


def limit_w(c) -> float | None:
    """The watts this device must stay under, or None."""
    own = c.base_limits.power_limit
    caps = [w for w in (own if own > 0 else None, c.power_share) if w is not None]
    return min(caps) if caps else None


def shown(c) -> dict | None:
    """What `tempctl status`, Prometheus and MQTT show: None while no power cap applies.
    ``mhz`` is the ceiling in force, MAX_FREQUENCY while the cap does not bind."""
    own = c.base_limits.power_limit
    if own <= 0 and c.power_share is None:
        return None
    mhz = c.power_mhz
    return {
        "limit_w": own if own > 0 else None,
        "share_w": c.power_share,
        "watts": limit_w(c),
        "mhz": c.base_limits.max_frequency if mhz is None else mhz,
        "binds": mhz is not None,
    }


def slope_w_per_mhz(c, p: float, f: float, mv: float, temp: float | None) -> float:
    """dP/df at this point from the learned k (the first reading's share before a step)."""
    v2 = (mv / 1000.0) ** 2
    k = c.model.params.k or (1 - P0_SHARE) * p / (f * v2)
    leak = 1 + c.model.params.leak * ((60.0 if temp is None else temp) - 60)
    return max(k * v2 * leak, 1e-6)


def ceiling_for(p: float, f: float, slope: float, cap: float) -> float:
    """Highest frequency on the PLL grid predicted to draw at most AIM of ``cap``."""
    return (f + (AIM * cap - p) / slope) // PLL_STEP * PLL_STEP


def watch(c, r, now_ms: int, d) -> None:
    """Each reading: move the ceiling when the measured point says it no longer fits."""
    _sample(c, r)
    cap = limit_w(c)
    if cap is None:
        if c.power_mhz is not None:
            _put(c, None, d, "power cap off")
        return
    (f, mv), seen = c.power_seen
    if len(seen) < SAMPLES or f != r.frequency:
        return  # no single power reading is evidence; the ceiling stays
    p = median(x for x, _ in seen)
    slope = slope_w_per_mhz(c, p, f, mv, r.temp)
    top = c.base_limits.max_frequency
    new = ceiling_for(p, f, slope, cap)
    if c.voltage_for is not None:  # (f, V): a raise brings the voltage it needs first
        while new > f and predict(c, p, f, mv, slope, new) > AIM * cap:
            new -= PLL_STEP
    cur = top if c.power_mhz is None else c.power_mhz
    if new >= top - FREQ_EPS:
        if c.power_mhz is not None:
            _put(c, None, d, f"{p:.1f} W at {f:g} MHz: MAX_FREQUENCY fits under {cap:g} W")
        return
    low = c.base_limits.lowest
    if max(new, low) == c.power_mhz:
        return  # pinned at the floor: said once, not at every reading
    if new > cur + FREQ_EPS or (new < cur - FREQ_EPS and predict(c, p, f, mv, slope, cur) > cap):
        why = f"{p:.1f} W at {f:g} MHz, {slope * 1000:.1f} mW/MHz, cap {cap:g} W"
        if new < low - FREQ_EPS:
            why += f"; the floor {low:g} MHz draws more (TEMPCTL_MIN_FREQUENCY lowers it)"
        _put(c, max(new, low), d, why)


def predict(c, p: float, f: float, mv: float, slope: float, at: float) -> float:
    """Power at ``at`` MHz from the measured ``p`` at (``f``, ``mv``): P = p0 + k·f·V², with
    V the governor's choice for ``at`` when it runs (it never lowers V for a raise)."""
    v = mv if c.voltage_for is None or at <= f else c.voltage_for(at, int(mv), f)
    dyn = slope * f  # k·f·V² at the measured point
    return p - dyn + dyn * (at / f) * (v / mv) ** 2


def _sample(c, r) -> None:
    p, mv, f = r.power, r.core_voltage, r.frequency
    if p is None or mv is None or f is None or not (0 < p <= POWER_MAX_W) or mv <= 0:
        return
    key, seen = c.power_seen
    seen = (seen if key == (f, mv) else ())[-(KEEP - 1) :] + ((p, r.hashrate or 0.0),)
    c.power_seen = ((f, mv), seen)


def volts(c):
    """The voltage each raise brings, f -> mV (the governor's ``planned``, from the model's
    present (f, V)), for the law to predict the pair; None without a governor."""
    m = c.model
    if c.voltage_for is None or not m.mv or m.f is None:
        return None
    mv, f0 = int(m.mv), m.f
    return lambda f: c.voltage_for(f, mv, f0)


def below_second(c) -> bool:
    """The power ceiling itself is below SECOND_FREQUENCY: going there says nothing of heat."""
    return c.power_mhz is not None and c.power_mhz < c.base_limits.second_frequency - FREQ_EPS


def set_share(c, watts: float | None) -> None:
    """The daemon's allocation (or replay's copy of it from the log)."""
    c.power_share = watts


def _put(c, mhz: float | None, d, why: str) -> None:
    old, c.power_mhz = c.power_mhz, mhz
    usercap.narrow(c)  # composes every ceiling (the user's, this one) into c.limits
    d.events.append(
        Event(
            "power_cap",
            f"power ceiling {'lifted' if mhz is None else f'{mhz:g} MHz'}: {why}",
            origin="tempctl",
            frequency_from=old,
            frequency_to=mhz,
        )
    )


# -- the shared budget (the daemon allocates, replay reads the allocation from the log) ------


@dataclass(frozen=True, slots=True)
class Demand:
    """One device as the allocation sees it: measured power and hashrate (medians), what
    it would draw one step higher (``want``) and at its floor (``floor``), all in W."""

    device: str
    power: float
    hashrate: float | None  # GH/s; None or 0: hashes nothing, the least efficient
    want: float
    floor: float

    @property
    def j_per_th(self) -> float:
        if not self.hashrate or self.hashrate <= 0:
            return float("inf")
        return self.power / (self.hashrate / 1000.0)


def allocate(demands: Sequence[Demand], budget: float) -> dict[str, float]:
    """Each device's share of ``budget`` (W). Every device gets its floor first (nothing goes
    below TEMPCTL_MIN_FREQUENCY); the rest goes to the most efficient first, up to what each
    wants, so the least efficient (highest J/TH) gives way first. The shares sum to at most
    the budget unless the floors alone exceed it."""
    order = sorted(demands, key=lambda x: (x.j_per_th, x.device))
    share = {x.device: x.floor for x in order}
    left = budget - sum(share.values())
    for x in order:
        more = min(max(x.want - x.floor, 0.0), max(left, 0.0))
        share[x.device] += more
        left -= more
    return {k: round(v, 1) for k, v in share.items()}


def demand(c, device: str, step_mhz: float) -> Demand | None:
    """What the allocation needs from a controller: None until it has a measured point."""
    (f, mv), seen = c.power_seen
    if len(seen) < SAMPLES or f is None:
        return None
    p = median(x for x, _ in seen)
    slope = slope_w_per_mhz(c, p, f, mv, None)
    lim = c.base_limits
    # a share of want / AIM lets the device draw ``want`` (the ceiling aims at AIM of it)
    want = (p + slope * max(min(f + step_mhz, lim.max_frequency) - f, 0.0)) / AIM
    floor = min(max(p + slope * (lim.lowest - f), 0.0), p)
    own = lim.power_limit
    if own > 0:  # its own cap binds anyway: no share above it helps
        want = min(want, own)
    return Demand(device, p, median(h for _, h in seen), want, floor)


def reallocate(controllers: Mapping[str, object], budget: float) -> dict[str, float]:
    """One round of the daemon's allocation: the shares that changed, by device. Nothing
    until every device has a measured point (a device not yet heard from may draw anything)."""
    demands = []
    for name, c in controllers.items():
        x = demand(c, name, c.base_limits.step)
        if x is None:
            return {}
        demands.append(x)
    shares = allocate(demands, budget)
    return {n: w for n, w in shares.items() if changed(controllers[n].power_share, w)}


def share_event(old: float | None, new: float, budget: float) -> Event:
    """The log's record of a share: replay hands it to the controller at the same reading.
    frequency_from/_to carry watts here (the events table has no other number)."""
    was = "none" if old is None else f"{old:g} W"
    return Event(
        "power_budget",
        f"power share {new:g} W of TEMPCTL_POWER_BUDGET {budget:g} W (was {was})",
        origin="daemon",
        frequency_from=old,
        frequency_to=new,
    )


def changed(old: float | None, new: float) -> bool:
    """A share moves (and is logged) only by more than 1 % or 0.2 W: medians wander."""
    return old is None or abs(new - old) > max(0.2, 0.01 * new)
