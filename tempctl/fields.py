"""The settings table: every setting's names, type, default, range and help, in one place.

``FIELDS`` drives loading (tempctl/config.py), the command-line options, the README's
settings table and the example files. Each range is physically meaningful (issue 13.7):
outside it a value is refused with one line naming the range; ``unusual`` values load
with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tempctl.checks import (
    POWER_RANGE,
    Check,
    Range,
    alert_urls_or_empty,
    between,
    format_value,
    host,
    mqtt_url_or_empty,
    not_empty,
    over,
    password_file_or_empty,
    readable_by_others,
    topic_part,
    under,
)
from tempctl.core.limits import DEFAULTS
from tempctl.daemon.webhook import PASSWORD_FILE_ENV

# Firmware limits behind the ranges below (shared/reference/axeos-api.md):
# §5.2: the API accepts any frequency 1-65535 MHz, so "the daemon must enforce its own
#   frequency bounds"; the highest frequencyOptions entry (§7) is 625 MHz, so 1500 leaves
#   room for overclockers while catching a typo such as 4900.
# §9.1: the firmware trips at ASIC temp > 75 °C and vrTemp > 105 °C (no hysteresis).
# A TEMPCTL_CRITICAL above the ASIC trip could never fire before the firmware's own trip.
FREQ_MIN, FREQ_MAX = 50.0, 1500.0
ASIC_TRIP, VR_TRIP = 75.0, 105.0


@dataclass(frozen=True)
class Field:
    """One setting: the names it goes by in each source, its type, default and rule."""

    attr: str  # Settings attribute
    env: str  # environment variable
    toml: str  # key in the TOML file
    flag: str  # command-line option (bool fields also get --no-<name>)
    type: str  # float | int | bool | choice | path | url | host | str | devices
    default: Any
    help: str
    validator: Check | None = None  # returns the problem, or None when fine
    choices: tuple[str, ...] = ()
    per_device: bool = False  # may be overridden in a [[devices]] table
    unusual: Check | None = None  # plausible but odd: the text of a warning, or None
    deprecated: str = ""  # the attr of the setting that replaces this one

    @property
    def doc(self) -> str:
        """``help`` plus the enforced range, read from the validator so the two cannot
        disagree; the text --help and the README show."""
        allowed = getattr(self.validator, "allowed", "")
        return f"{self.help} Allowed: {allowed}." if allowed else self.help


_floor_check = Range(FREQ_MIN, FREQ_MAX, zero="auto", unit="MHz")


# --- the table ---------------------------------------------------------------------------

FIELDS: tuple[Field, ...] = (
    Field(
        "devices",
        "BITAXE_IP",
        "bitaxe_ip",
        "--bitaxe-ip",
        "devices",
        (),
        "Device address: http://HOST, HOST or HOST:PORT; comma-separated for several "
        "(or [[devices]] tables in the config file).",
    ),
    Field(
        "temp_threshold",
        "TEMP_THRESHOLD",
        "temp_threshold",
        "--temp-threshold",
        "float",
        DEFAULTS["temp_threshold"],
        "ASIC temperature (°C) above which the frequency is lowered.",
        between(30, ASIC_TRIP - 1, "below the firmware's 75 °C trip, axeos-api.md §9.1", unit="°C"),
        per_device=True,
    ),
    Field(
        "first_frequency",
        "FIRST_FREQUENCY",
        "first_frequency",
        "--first-frequency",
        "float",
        DEFAULTS["first_frequency"],
        "First step down (MHz); above SECOND_FREQUENCY, at most MAX_FREQUENCY.",
        between(FREQ_MIN, FREQ_MAX, unit="MHz"),
        per_device=True,
    ),
    Field(
        "second_frequency",
        "SECOND_FREQUENCY",
        "second_frequency",
        "--second-frequency",
        "float",
        DEFAULTS["second_frequency"],
        "Second step down (MHz); below FIRST_FREQUENCY.",
        between(FREQ_MIN, FREQ_MAX, unit="MHz"),
        per_device=True,
    ),
    Field(
        "max_frequency",
        "MAX_FREQUENCY",
        "max_frequency",
        "--max-frequency",
        "float",
        DEFAULTS["max_frequency"],
        "Highest frequency (MHz): never exceeded, and the one restored to (a lower frequency a "
        "user sets in AxeOS is kept instead: TEMPCTL_USER_CAP); at least FIRST_FREQUENCY.",
        between(FREQ_MIN, FREQ_MAX, unit="MHz"),
        per_device=True,
        unusual=over(625, "above 625 MHz, the highest frequencyOptions entry (axeos-api.md §7)"),
    ),
    Field(
        "check_interval",
        "CHECK_INTERVAL",
        "check_interval",
        "--check-interval",
        "float",
        DEFAULTS["check_interval"],
        "Seconds between polls.",
        between(0.2, 600, "seconds", unit="s"),
        unusual=over(
            120, "polls more than 2 min apart: the chip can pass the threshold in between"
        ),
    ),
    Field(
        "stable_timeframe",
        "STABLE_TIMEFRAME",
        "stable_timeframe",
        "--stable-timeframe",
        "float",
        DEFAULTS["stable_timeframe"],
        "Hours (not seconds: 0.5 = 30 min) the temperature must stay stable before restoring.",
        between(0, 168, "hours", above=True, unit="h"),
        per_device=True,
        unusual=over(24, "more than a day: the value is in hours, not seconds"),
    ),
    Field(
        "db",
        "TEMPCTL_DB",
        "db",
        "--db",
        "path",
        "./tempctl.db",
        "SQLite log file (default $STATE_DIRECTORY/tempctl.db under systemd, else ./tempctl.db).",
        not_empty,
    ),
    Field(
        "settle",
        "TEMPCTL_SETTLE",
        "settle",
        "--settle",
        "float",
        DEFAULTS["settle"],
        "Seconds after a change before its effect is judged (temperatures take 2–3 min to settle).",
        between(0, 3600, "seconds", unit="s"),
        per_device=True,
        unusual=over(900, "more than 15 min before a change is judged"),
    ),
    Field(
        "hysteresis",
        "TEMPCTL_HYSTERESIS",
        "hysteresis",
        "--hysteresis",
        "float",
        DEFAULTS["hysteresis"],
        "°C below TEMP_THRESHOLD that counts as cool again.",
        between(0, 10, "°C", unit="°C"),
        per_device=True,
        unusual=over(5, "more than 5 °C below TEMP_THRESHOLD before the chip counts as cool"),
    ),
    Field(
        "critical",
        "TEMPCTL_CRITICAL",
        "critical",
        "--critical",
        "float",
        DEFAULTS["critical"],
        "ASIC temperature (°C) that triggers immediate action; above TEMP_THRESHOLD.",
        between(31, ASIC_TRIP, "the firmware trips above 75 °C, axeos-api.md §9.1", unit="°C"),
        per_device=True,
    ),
    Field(
        "vr_threshold",
        "TEMPCTL_VR_THRESHOLD",
        "vr_threshold",
        "--vr-threshold",
        "float",
        DEFAULTS["vr_threshold"],
        "VR temperature (°C) treated like the ASIC over TEMP_THRESHOLD "
        "(the firmware trips above 105 °C).",
        between(40, VR_TRIP, "the firmware trips above 105 °C, axeos-api.md §9.1", unit="°C"),
        per_device=True,
        unusual=over(95, "above 95 °C: keep the VR below about 95 °C (axeos-api.md §9.4)"),
    ),
    Field(
        "critical_floor",
        "TEMPCTL_CRITICAL_FLOOR",
        "critical_floor",
        "--critical-floor",
        "float",
        DEFAULTS["critical_floor"],
        "Deprecated: the old name of TEMPCTL_MIN_FREQUENCY (MHz).",
        _floor_check,
        per_device=True,
        deprecated="min_frequency",
    ),
    Field(
        "min_frequency",
        "TEMPCTL_MIN_FREQUENCY",
        "min_frequency",
        "--min-frequency",
        "float",
        DEFAULTS["min_frequency"],
        "Floor (MHz) the law may go down to when SECOND_FREQUENCY cannot hold TEMP_THRESHOLD; "
        "at most SECOND_FREQUENCY; 0 = auto: 40 % of MAX_FREQUENCY, at least 100 MHz.",
        _floor_check,
        unusual=under(100, "below 100 MHz: the chip barely hashes there"),
        per_device=True,
    ),
    Field(
        "law",
        "TEMPCTL_LAW",
        "law",
        "--law",
        "choice",
        DEFAULTS["law"],
        "Control law: model (learned device model) or levels (the fixed FIRST/SECOND levels of "
        "tempctl 0.1).",
        choices=("model", "levels"),
        per_device=True,
    ),
    Field(
        "restore_after_trip",
        "TEMPCTL_RESTORE_AFTER_TRIP",
        "restore_after_trip",
        "--restore-after-trip",
        "bool",
        DEFAULTS["restore_after_trip"],
        "After a firmware overheat trip, once cool, restore the autofan, fan and core voltage "
        "the trip took away.",
        per_device=True,
    ),
    Field(
        "voltage",
        "TEMPCTL_VOLTAGE",
        "voltage",
        "--voltage",
        "choice",
        DEFAULTS["voltage"],
        "Core voltage control: off (leave it as set) or auto (learn each device's lowest "
        "stable voltage from its error rate and run a margin above it, so a higher frequency "
        "fits under TEMP_THRESHOLD).",
        choices=("off", "auto"),
        per_device=True,
    ),
    Field(
        "min_voltage",
        "TEMPCTL_MIN_VOLTAGE",
        "min_voltage",
        "--min-voltage",
        "int",
        DEFAULTS["min_voltage"],
        "Lowest core voltage (mV) TEMPCTL_VOLTAGE=auto may set; below TEMPCTL_MAX_VOLTAGE.",
        between(1000, 1500, "the TPS546 regulator's window", unit="mV"),
        per_device=True,
    ),
    Field(
        "max_voltage",
        "TEMPCTL_MAX_VOLTAGE",
        "max_voltage",
        "--max-voltage",
        "int",
        DEFAULTS["max_voltage"],
        "Highest core voltage (mV) TEMPCTL_VOLTAGE=auto may set.",
        between(1000, 1500, "the TPS546 regulator's window", unit="mV"),
        per_device=True,
    ),
    Field(
        "goal",
        "TEMPCTL_GOAL",
        "goal",
        "--goal",
        "choice",
        DEFAULTS["goal"],
        "What TEMPCTL_VOLTAGE=auto favours: hashrate (a wider voltage margin) or efficiency "
        "(a narrower one, fewer joules per terahash).",
        choices=("hashrate", "efficiency"),
        per_device=True,
    ),
    Field(
        "user_cap",
        "TEMPCTL_USER_CAP",
        "user_cap",
        "--user-cap",
        "choice",
        DEFAULTS["user_cap"],
        "A frequency a person lowers by hand in AxeOS: keep (tempctl never sets it higher "
        "until the user raises it again, or TEMPCTL_USER_CAP_HOURS pass) or off (tempctl "
        "works from it and climbs back towards MAX_FREQUENCY).",
        choices=("keep", "off"),
        per_device=True,
    ),
    Field(
        "user_cap_hours",
        "TEMPCTL_USER_CAP_HOURS",
        "user_cap_hours",
        "--user-cap-hours",
        "float",
        DEFAULTS["user_cap_hours"],
        "Hours a user's cap (TEMPCTL_USER_CAP=keep) lasts; 0 = until the user raises the "
        "frequency again in AxeOS.",
        Range(0.1, 8760, "hours", zero="until raised", unit="h"),
        per_device=True,
    ),
    Field(
        "power_limit",
        "TEMPCTL_POWER_LIMIT",
        "power_limit",
        "--power-limit",
        "float",
        DEFAULTS["power_limit"],
        "Power cap (W) per device, under either TEMPCTL_LAW: tempctl keeps the board's "
        "measured power under it by choosing the highest frequency whose predicted power "
        "fits; 0 = off.",
        POWER_RANGE,
        per_device=True,
    ),
    Field(
        "power_budget",
        "TEMPCTL_POWER_BUDGET",
        "power_budget",
        "--power-budget",
        "float",
        DEFAULTS["power_budget"],
        "Shared power budget (W) for all devices of one daemon: when their sum would exceed "
        "it, the least efficient device (J/TH) gets a lower cap first; 0 = off.",
        POWER_RANGE,
    ),
    Field(
        "step",
        "TEMPCTL_STEP",
        "step",
        "--step",
        "float",
        DEFAULTS["step"],
        "Restore step (MHz).",
        between(1, 200, "MHz", unit="MHz"),
        per_device=True,
        unusual=under(5, "below 5 MHz: restoring the frequency takes many settle periods"),
    ),
    Field(
        "apply",
        "TEMPCTL_APPLY",
        "apply",
        "--apply",
        "choice",
        DEFAULTS["apply"],
        "How a frequency change reaches the device: auto (live where the firmware can, else "
        "restart), live, or restart (the original script's way).",
        choices=("auto", "live", "restart"),
        per_device=True,
    ),
    Field(
        "dry_run",
        "TEMPCTL_DRY_RUN",
        "dry_run",
        "--dry-run",
        "bool",
        DEFAULTS["dry_run"],
        "Observe and log decisions, never write to the device.",
    ),
    Field(
        "max_restarts_per_hour",
        "TEMPCTL_MAX_RESTARTS_PER_HOUR",
        "max_restarts_per_hour",
        "--max-restarts-per-hour",
        "int",
        DEFAULTS["max_restarts_per_hour"],
        "Most device restarts allowed per hour.",
        between(0, 60),
    ),
    Field(
        "log_level",
        "TEMPCTL_LOG_LEVEL",
        "log_level",
        "--log-level",
        "choice",
        "INFO",
        "Logging level (transitions and commands at INFO, readings at DEBUG).",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
    ),
    Field(
        "retention_days",
        "TEMPCTL_RETENTION_DAYS",
        "retention_days",
        "--retention-days",
        "float",
        0.0,
        "Raw readings older than this (days) are folded into 1-minute aggregates; 0 = keep all.",
        between(0, 3650, "days; 0 = keep all", unit="days"),
    ),
    Field(
        "alert_url",
        "TEMPCTL_ALERT_URL",
        "alert_url",
        "--alert-url",
        "url",
        "",
        "Webhook for alerts (ntfy-compatible); several separated by commas; empty = off. "
        "No password in the URL: name the user (https://alice@host/...) and put the "
        f"password in {PASSWORD_FILE_ENV}.",
        alert_urls_or_empty,
    ),
    Field(
        "alert_password_file",
        PASSWORD_FILE_ENV,
        "alert_password_file",
        "--alert-password-file",
        "path",
        "",
        "File holding the password for the alert URLs that name a user (HTTP Basic auth); "
        "empty = none. Only the path is ever shown.",
        password_file_or_empty,
        unusual=readable_by_others,
    ),
    Field(
        "metrics_port",
        "TEMPCTL_METRICS_PORT",
        "metrics_port",
        "--metrics-port",
        "int",
        0,
        "TCP port of the Prometheus endpoint; 0 = off.",
        between(0, 65535),
    ),
    Field(
        "metrics_host",
        "TEMPCTL_METRICS_HOST",
        "metrics_host",
        "--metrics-host",
        "host",
        "127.0.0.1",
        "Address the Prometheus endpoint listens on.",
        host,
    ),
    Field(
        "device_password_file",
        "TEMPCTL_DEVICE_PASSWORD_FILE",
        "device_password_file",
        "--device-password-file",
        "path",
        "",
        "File holding the device's AxeOS password (HTTP Basic auth, ESP-Miner PR #1750); "
        "empty = none. Only the path is ever shown.",
        password_file_or_empty,
        per_device=True,
        unusual=readable_by_others,
    ),
    Field(
        "mqtt_url",
        "TEMPCTL_MQTT_URL",
        "mqtt_url",
        "--mqtt-url",
        "url",
        "",
        "MQTT broker for Home Assistant: mqtt://[user@]host[:port] (1883), mqtts:// for TLS "
        "(8883); no password in it; empty = off.",
        mqtt_url_or_empty,
    ),
    Field(
        "mqtt_password_file",
        "TEMPCTL_MQTT_PASSWORD_FILE",
        "mqtt_password_file",
        "--mqtt-password-file",
        "path",
        "",
        "File holding the MQTT broker password; empty = none. Only the path is ever shown.",
        password_file_or_empty,
    ),
    Field(
        "mqtt_prefix",
        "TEMPCTL_MQTT_PREFIX",
        "mqtt_prefix",
        "--mqtt-prefix",
        "str",
        "tempctl",
        "Topic prefix of tempctl's MQTT state, availability and command topics.",
        topic_part,
    ),
    Field(
        "mqtt_discovery",
        "TEMPCTL_MQTT_DISCOVERY",
        "mqtt_discovery",
        "--mqtt-discovery",
        "str",
        "homeassistant",
        "Home Assistant's MQTT discovery prefix.",
        topic_part,
    ),
    Field(
        "mqtt_control",
        "TEMPCTL_MQTT_CONTROL",
        "mqtt_control",
        "--mqtt-control",
        "bool",
        False,
        "Let MQTT (Home Assistant) switch dry run and set TEMP_THRESHOLD; such changes last "
        "until restart unless also put in the config.",
    ),
)

BY_ATTR: dict[str, Field] = {f.attr: f for f in FIELDS}


__all__ = ["BY_ATTR", "FIELDS", "Field", "format_value"]
