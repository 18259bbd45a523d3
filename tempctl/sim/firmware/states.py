"""Device phases and the strings and figures the firmware shows for them."""

from __future__ import annotations

__all__ = [
    "BOOTING",
    "BOOT_MHZ",
    "COOLDOWN",
    "DOWN",
    "MINING",
    "PAUSED",
    "RESET_PANIC",
    "RESET_POWER_ON",
    "RESET_SOFTWARE",
    "RESTART_TEXT",
    "STOPPED",
]

MINING, DOWN, BOOTING, COOLDOWN, PAUSED = "mining", "down", "booting", "cooldown", "paused"
# Mining stopped by the power-management loop for a reason that is not heat (§14: no pool
# reachable, a hardware fault, a TPS546 power fault): the ASIC is off, the HTTP server answers.
STOPPED = "stopped"

BOOT_MHZ = 50.0  # §6: cold-boot ramp starts at 50 MHz; §9.3: 50 MHz while stopped

RESET_POWER_ON = "Reset due to power-on event"
RESET_SOFTWARE = "Software reset via esp_restart"
RESET_PANIC = "Software reset due to exception/panic"
RESTART_TEXT = "System will restart shortly."
