"""Which readings are evidence of how the chip behaves at its frequency.

A reading that is excluded here neither teaches the thermal model nor counts toward
the stable window of the model law (``window.py`` applies the same rules in SQL).
Readings within TEMPCTL_SETTLE of a frequency change are excluded by the law itself
(``law.Facts.stable``), and by the model's own lag correction.
"""

from __future__ import annotations

from tempctl.core.limits import PLL_STEP
from tempctl.core.reading import Reading

__all__ = ["BOOT_GRACE_S", "RAMP_TOLERANCE", "RULES", "exclusion"]

# A restarted chip starts cold and takes ~5 τ (τ_slow 48 s, data/README §4) to warm up;
# the firmware itself needs ~8 s to boot and ~6 s to ramp (axeos-api.md §6).
BOOT_GRACE_S = 240
RAMP_TOLERANCE = PLL_STEP / 2  # actualFrequency this far from the setting: still ramping

RULES = (
    ("invalid", "no valid ASIC temperature"),
    ("tripped", "the firmware's overheat trip is showing"),
    ("stopped", "mining stopped (power or hardware fault, or no pool)"),
    (
        "booting",
        f"uptime under {BOOT_GRACE_S} s: just booted or rebooted, the die is still warming",
    ),
    ("not hashing", "hashRate 0: the chip is idle, so it runs cool"),
    ("ramping", "actualFrequency differs from the setting (v2.14+): the PLL is still ramping"),
)


def exclusion(r: Reading) -> str | None:
    """The first rule of ``RULES`` that excludes this reading, or None when it is evidence."""
    if r.temp is None:
        return "invalid"
    if r.overheat:
        return "tripped"
    if getattr(r, "fault", None):
        return "stopped"
    if r.uptime_s is not None and r.uptime_s < BOOT_GRACE_S:
        return "booting"
    if r.hashrate is not None and r.hashrate <= 0:
        return "not hashing"
    f, live = r.frequency, r.actual_frequency
    if f is not None and live is not None and abs(live - f) > RAMP_TOLERANCE:
        return "ramping"
    return None
