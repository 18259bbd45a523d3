"""The settings' checks: each returns the problem text (or a warning's) or None.

Kept apart from the table (tempctl/fields.py) so each stays small; the range texts here
are what --help, the README and every refusal show.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import ip_address
from typing import Any
from urllib.parse import urlsplit

from tempctl.daemon.webhook import url_problem
from tempctl.device import read_password_file

Check = Callable[[Any], "str | None"]


def format_value(value: object) -> str:
    """Render a value the way a user would type it: 400 not 400.0, true not True."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, (list, tuple)):
        return ",".join(getattr(d, "url", None) or format_value(d) for d in value)
    if isinstance(value, str) and not value.isprintable():
        return repr(value)  # keep the error on one line and show what was really there
    return str(value)


def _num(x: float) -> str:
    return format_value(float(x))


@dataclass(frozen=True)
class Range:
    """The range check; its message names the range, e.g. 'must be between 30 and 75'.
    ``above``: the low end itself is excluded ('must be above 0 and at most 168');
    ``zero``: 0 is allowed too, meaning ``zero`` ('must be 0 (auto) or between ...');
    ``unit`` is for the docs only ('30 to 74 °C')."""

    low: float
    high: float
    why: str = ""
    above: bool = False
    zero: str = ""
    unit: str = ""

    def __call__(self, v: float) -> str | None:
        if self.zero and v == 0:
            return None
        if self.low <= v <= self.high and not (self.above and v == self.low):
            return None
        why = f" ({self.why})" if self.why else ""
        if self.above:
            return f"must be above {_num(self.low)} and at most {_num(self.high)}{why}"
        zero = f"0 ({self.zero}) or " if self.zero else ""
        return f"must be {zero}between {_num(self.low)} and {_num(self.high)}{why}"

    @property
    def allowed(self) -> str:
        """The range as the docs show it: '30 to 74 °C', 'above 0, at most 168 h'."""
        unit = f" {self.unit}" if self.unit else ""
        if self.above:
            return f"above {_num(self.low)}, at most {_num(self.high)}{unit}"
        zero = f"0 ({self.zero}) or " if self.zero else ""
        return f"{zero}{_num(self.low)} to {_num(self.high)}{unit}"


def between(
    low: float, high: float, why: str = "", *, above: bool = False, unit: str = ""
) -> Check:
    return Range(low, high, why, above, unit=unit)


def over(limit: float, text: str) -> Check:
    """A warning check: ``text`` when the value is above ``limit``."""
    return lambda v: text if v > limit else None


def under(limit: float, text: str) -> Check:
    return lambda v: text if 0 < v < limit else None


def alert_urls_or_empty(v: str) -> str | None:
    return url_problem(v) if v else None


def password_file_or_empty(v: str) -> str | None:
    if not v:
        return None
    try:
        read_password_file(v)  # the problem names the file, never the password
    except ValueError as exc:
        return str(exc)
    return None


def readable_by_others(v: str) -> str | None:
    """The warning for a password file that group or other users may read (issue 23.9)."""
    try:
        mode = os.stat(v).st_mode if v else 0
    except OSError:
        return None
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        return f"readable by other users (mode {stat.S_IMODE(mode):04o}): chmod 600 it"
    return None


def host(v: str) -> str | None:
    try:
        ip_address(v.strip("[]"))
        return None
    except ValueError:
        pass
    labels = v.rstrip(".").split(".")
    if v and all(lbl and len(lbl) <= 63 and lbl.replace("-", "").isalnum() for lbl in labels):
        return None
    return "must be a host name or IP address"


def mqtt_url_or_empty(v: str) -> str | None:
    """mqtt://[user@]host[:port] or mqtts://; a password in the URL would end up in logs,
    the stored config and Datasette, so it is refused (TEMPCTL_MQTT_PASSWORD_FILE)."""
    if v == "":
        return None
    try:
        parts = urlsplit(v)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        return "must be mqtt://[user@]host[:port] or mqtts://... (a bad port)"
    if parts.password is not None:
        return "must not contain a password: put it in TEMPCTL_MQTT_PASSWORD_FILE"
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        return "must be mqtt://[user@]host[:port] or mqtts://... (or empty)"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return "must be mqtt://[user@]host[:port] with nothing after the port"
    return None


def topic_part(v: str) -> str | None:
    if not v or any(c in v for c in "#+\0") or v.startswith("/") or v.endswith("/"):
        return "must be a non-empty MQTT topic without +, #, NUL or a leading/trailing /"
    return None


def not_empty(v: str) -> str | None:
    return "must not be empty" if not v else None


# A board's power: a single-chip Bitaxe's self-test bound is 12 + 3 W, a SupraHex's 90 + 3 W
# (axeos-api §10, maxPower up to 120 W);
# 2000 W leaves room for a daemon's whole shelf under TEMPCTL_POWER_BUDGET.
POWER_RANGE = Range(5, 2000, "W", zero="off", unit="W")
