"""tempctl's settings: one table of fields, loaded with precedence and validated.

Precedence, highest first: command-line flags > environment > TOML file > defaults.
``[[devices]]`` tables in the file may override some settings for one device; those
overrides are applied last, by ``Settings.for_device``.

The environment names are the ones the original script's users already have in their
systemd units (BITAXE_IP, TEMP_THRESHOLD, ...), so they must keep working unchanged.

Every error is a ``ConfigError`` whose text is one line naming the setting, the bad
value and where it came from, e.g. ``TEMP_THRESHOLD=abc (environment): not a number``.
"""

from __future__ import annotations

import difflib
import math
import operator
import os
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from tempctl.config_file import ConfigError, check_env_file, one_line, read_toml
from tempctl.daemon.webhook import PASSWORD_FILE_ENV, hide_password, split_urls
from tempctl.device import normalize_url
from tempctl.fields import BY_ATTR, FIELDS, Field, format_value

_fmt = format_value

DEFAULT_CONFIG_PATH = "/etc/tempctl/tempctl.toml"
CONFIG_ENV = "TEMPCTL_CONFIG"

# Where a value came from. A file's source is its path as given.
DEFAULT = "default"
ENVIRONMENT = "environment"
COMMAND_LINE = "command line"


_BY_TOML: dict[str, Field] = {f.toml: f for f in FIELDS}
_KNOWN_ENV = {f.env for f in FIELDS} | {CONFIG_ENV, "TEMPCTL_ENV_FILE"}
_DEFAULTS: dict[str, Any] = {f.attr: f.default for f in FIELDS}

# Cross-field rules: (left, op, right) means "left op right" must hold.
_RULES = (
    ("second_frequency", "<", "first_frequency"),
    ("first_frequency", "<=", "max_frequency"),
    ("critical", ">", "temp_threshold"),
    ("min_frequency", "<=", "second_frequency"),  # only when set (0 = auto)
    ("critical_floor", "<=", "second_frequency"),
    ("min_voltage", "<", "max_voltage"),
)
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}
_WORDS = {"<": "less than", ">": "greater than", "<=": "<=", ">=": ">="}


@dataclass(frozen=True)
class Device:
    name: str
    url: str
    overrides: Mapping[str, object] = field(default_factory=dict, hash=False)
    where: str = ""  # "devices[1]" when it came from a [[devices]] table


@dataclass(frozen=True)
class Settings:
    devices: tuple[Device, ...] = ()
    temp_threshold: float = _DEFAULTS["temp_threshold"]
    first_frequency: float = _DEFAULTS["first_frequency"]
    second_frequency: float = _DEFAULTS["second_frequency"]
    max_frequency: float = _DEFAULTS["max_frequency"]
    check_interval: float = _DEFAULTS["check_interval"]
    stable_timeframe: float = _DEFAULTS["stable_timeframe"]  # hours
    db: str = _DEFAULTS["db"]
    settle: float = _DEFAULTS["settle"]
    hysteresis: float = _DEFAULTS["hysteresis"]
    critical: float = _DEFAULTS["critical"]
    vr_threshold: float = _DEFAULTS["vr_threshold"]
    critical_floor: float = _DEFAULTS["critical_floor"]
    min_frequency: float = _DEFAULTS["min_frequency"]
    law: str = _DEFAULTS["law"]
    restore_after_trip: bool = _DEFAULTS["restore_after_trip"]
    voltage: str = _DEFAULTS["voltage"]
    min_voltage: int = _DEFAULTS["min_voltage"]
    max_voltage: int = _DEFAULTS["max_voltage"]
    goal: str = _DEFAULTS["goal"]
    user_cap: str = _DEFAULTS["user_cap"]
    user_cap_hours: float = _DEFAULTS["user_cap_hours"]
    power_limit: float = _DEFAULTS["power_limit"]
    power_budget: float = _DEFAULTS["power_budget"]
    step: float = _DEFAULTS["step"]
    apply: str = _DEFAULTS["apply"]
    dry_run: bool = _DEFAULTS["dry_run"]
    max_restarts_per_hour: int = _DEFAULTS["max_restarts_per_hour"]
    log_level: str = _DEFAULTS["log_level"]
    retention_days: float = _DEFAULTS["retention_days"]
    alert_url: str = _DEFAULTS["alert_url"]
    alert_password_file: str = _DEFAULTS["alert_password_file"]
    metrics_port: int = _DEFAULTS["metrics_port"]
    metrics_host: str = _DEFAULTS["metrics_host"]
    device_password_file: str = _DEFAULTS["device_password_file"]
    mqtt_url: str = _DEFAULTS["mqtt_url"]
    mqtt_password_file: str = _DEFAULTS["mqtt_password_file"]
    mqtt_prefix: str = _DEFAULTS["mqtt_prefix"]
    mqtt_discovery: str = _DEFAULTS["mqtt_discovery"]
    mqtt_control: bool = _DEFAULTS["mqtt_control"]
    # attr -> "default" | "environment" | "command line" | file path | "devices[i] in <path>"
    sources: Mapping[str, str] = field(default_factory=dict, hash=False, repr=False)
    warnings: tuple[str, ...] = ()
    config_path: str | None = None  # the TOML file that was read, if any

    def for_device(self, device: Device) -> Settings:
        """These settings with ``device``'s overrides applied (validated again)."""
        if not device.overrides:
            return self
        where = device.where or device.name
        path = self.sources.get("devices", DEFAULT)
        values, origins = {}, {}
        for attr, raw in device.overrides.items():
            f = BY_ATTR.get(attr)
            if f is None or not f.per_device:
                raise ConfigError(f"{where}.{attr} ({path}): not a per-device setting")
            name = f"{where}.{f.toml}"
            values[attr] = _parse_checked(f, raw, name, path)
            origins[attr] = (name, path, 4)
        if "min_frequency" in values and "critical_floor" not in values:
            values["critical_floor"] = values["min_frequency"]  # one setting, two names
        sources = {**self.sources, **{a: f"{where} in {path}" for a in values}}
        out = replace(self, **values, sources=sources)
        _check_rules(out, lambda a: origins.get(a) or _origin(self, a))
        if "critical_floor" in values or "min_frequency" in values:
            out = _aliased(out, "min_frequency" in values, values)
        return out

    def as_env(self) -> dict[str, str]:
        """Every setting as ENV=value text that load_settings reads back to the same value."""
        env = {}
        for f in FIELDS:
            if f.deprecated:
                continue
            value = getattr(self, f.attr)
            if f.type == "devices":
                if value:
                    env[f.env] = ",".join(d.url for d in value)
            else:
                env[f.env] = _fmt(value)
        return env

    @property
    def stable_seconds(self) -> float:
        return self.stable_timeframe * 3600.0


# --- formatting and parsing of single values ---------------------------------------------


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(f: Field, raw: object) -> object:
    """Turn a raw value (text from env/flags, or a TOML value) into the field's type.

    Raises ValueError with the problem text.
    """
    kind = f.type
    if kind == "float":
        if isinstance(raw, bool):
            raise ValueError("not a number")
        try:
            value = float(raw.strip() if isinstance(raw, str) else raw)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError("not a number") from None
        if not math.isfinite(value):
            raise ValueError("not a finite number")
        return value
    if kind == "int":
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ValueError("not a whole number")
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError("not a boolean (use 1/0, true/false, yes/no or on/off)")
    if kind == "choice":
        if isinstance(raw, str):
            for choice in f.choices:
                if raw.strip().lower() == choice.lower():
                    return choice
        raise ValueError(f"must be one of {', '.join(f.choices)}")
    if kind == "devices":
        return _parse_devices(raw)
    if isinstance(raw, str):
        return raw.strip()
    raise ValueError("not a string")


def _parse_checked(f: Field, raw: object, name: str, source: str) -> object:
    """Parse and range-check one value; errors name it as ``name=raw (source)``."""
    try:
        value = _parse(f, raw)
        problem = f.validator(value) if f.validator else None
    except ValueError as e:
        problem = str(e)
    if problem:
        raise ConfigError(one_line(f"{name}={_shown(f, raw)} ({source}): {problem}"))
    return value


def _shown(f: Field, raw: object) -> str:
    """The value for an error message; a URL's password (refused anyway) is never shown."""
    return hide_password(_fmt(raw)) if f.type == "url" else _fmt(raw)


def _device(url_text: str) -> Device:
    url = normalize_url(url_text)
    return Device(name=url.split("://", 1)[1], url=url)


def _parse_devices(raw: object) -> tuple[Device, ...]:
    if isinstance(raw, str):
        items = raw.split(",")
    elif isinstance(raw, (list, tuple)) and all(isinstance(x, str) for x in raw):
        items = list(raw)
    else:
        raise ValueError("must be a text like 10.0.0.5 or a list of them")
    items = [x.strip() for x in items if x.strip()]
    if not items:
        raise ValueError("no device address given")
    devices = tuple(_device(x) for x in items)
    urls = [d.url for d in devices]
    for url in urls:
        if urls.count(url) > 1:
            raise ValueError(f"{url} is listed twice")
    return devices


# --- the TOML file ------------------------------------------------------------------------


def _pick_config(
    config_path: str | None, environ: Mapping[str, str], default_config: str
) -> tuple[str, str | None]:
    """Which file to read, and how to name it in a 'not found' error (None = optional)."""
    if config_path is not None:
        return config_path, f"--config={config_path} ({COMMAND_LINE})"
    if environ.get(CONFIG_ENV):
        return environ[CONFIG_ENV], f"{CONFIG_ENV}={environ[CONFIG_ENV]} ({ENVIRONMENT})"
    return default_config, None


ENV_FILE_ENV = "TEMPCTL_ENV_FILE"


def _unknown(prefix: str, key: str, path: str, known: list[str]) -> ConfigError:
    close = difflib.get_close_matches(key.lower(), known, n=1)
    hint = f"; did you mean {prefix}{close[0]}?" if close else ""
    return ConfigError(f"{prefix}{key} ({path}): unknown key{hint}")


def _file_values(data: dict, path: str) -> dict[str, object]:
    """attr -> raw value from the file; [[devices]] become a parsed tuple of Devices."""
    values: dict[str, object] = {}
    for key, raw in data.items():
        if key == "devices":
            continue
        f = _BY_TOML.get(key)
        if f is None:
            raise _unknown("", key, path, [*_BY_TOML, "devices"])
        values[f.attr] = raw
    if "devices" in data:
        if "bitaxe_ip" in data:
            raise ConfigError(f"devices ({path}): use either bitaxe_ip or [[devices]], not both")
        values["devices"] = _device_tables(data["devices"], path)
    return values


def _device_tables(tables: object, path: str) -> tuple[Device, ...]:
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ConfigError(f"devices ({path}): must be an array of tables ([[devices]])")
    per_device = [f.toml for f in FIELDS if f.per_device]
    devices: list[Device] = []
    for i, table in enumerate(tables):
        where = f"devices[{i}]"
        if "url" not in table:
            raise ConfigError(f"{where} ({path}): missing url")
        try:
            device = _device(str(table["url"]))
        except ValueError as e:
            raise ConfigError(one_line(f"{where}.url={table['url']} ({path}): {e}")) from None
        name = table.get("name", device.name)
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{where}.name={_fmt(name)} ({path}): must be a non-empty text")
        overrides: dict[str, object] = {}
        for key, raw in table.items():
            if key in ("name", "url"):
                continue
            f = _BY_TOML.get(key)
            if f is None:
                raise _unknown(f"{where}.", key, path, ["name", "url", *per_device])
            if not f.per_device:
                raise ConfigError(
                    f"{where}.{key} ({path}): not a per-device setting "
                    f"(per-device: {', '.join(per_device)})"
                )
            overrides[f.attr] = _parse_checked(f, raw, f"{where}.{key}", path)
        for other in devices:
            if other.name == name.strip():
                raise ConfigError(f"{where}.name={name} ({path}): same name as {other.where}")
            if other.url == device.url:
                raise ConfigError(
                    f"{where}.url={table['url']} ({path}): same device as {other.where}"
                )
        devices.append(Device(name.strip(), device.url, overrides, where))
    return tuple(devices)


# --- cross-field rules --------------------------------------------------------------------

_RANK = {DEFAULT: 0, ENVIRONMENT: 2, COMMAND_LINE: 3}  # anything else is a file: 1


def _origin(settings: Settings, attr: str) -> tuple[str, str, int]:
    """(name to show, source, precedence rank) of one global setting."""
    f = BY_ATTR[attr]
    source = settings.sources.get(attr, DEFAULT)
    name = f.flag if source == COMMAND_LINE else f.env
    return name, source, _RANK.get(source, 1)


def _check_rules(s: Settings, origin: Callable[[str], tuple[str, str, int]]) -> None:
    for left, op, right in _RULES:
        a, b = getattr(s, left), getattr(s, right)
        if left in ("critical_floor", "min_frequency") and a == 0:
            continue
        if _OPS[op](a, b):
            continue
        (ln, ls, lr), (rn, rs, rr) = origin(left), origin(right)
        if rr > lr:  # blame whichever side was set with the higher precedence
            msg = f"{rn}={_fmt(b)} ({rs}): must be {_WORDS[_FLIP[op]]} {ln}={_fmt(a)} ({ls})"
        else:
            msg = f"{ln}={_fmt(a)} ({ls}): must be {_WORDS[op]} {rn}={_fmt(b)} ({rs})"
        raise ConfigError(msg)
    if not s.alert_password_file and any(urlsplit(u).username for u in split_urls(s.alert_url)):
        name, source, _ = origin("alert_url")
        raise ConfigError(
            f"{name}={hide_password(s.alert_url)} ({source}): names a user, so its password "
            f"must be in a file named by {PASSWORD_FILE_ENV}, which is not set"
        )


# --- loading ------------------------------------------------------------------------------


def _default_db(environ: Mapping[str, str]) -> str:
    # systemd's StateDirectory= sets STATE_DIRECTORY, colon-separated when several are given.
    state = environ.get("STATE_DIRECTORY", "").split(":")[0]
    return os.path.join(state, "tempctl.db") if state else BY_ATTR["db"].default


def load_settings(
    flags: Mapping[str, object] | None = None,
    environ: Mapping[str, str] | None = None,
    config_path: str | None = None,
    *,
    require_devices: bool = True,
    default_config: str | None = None,
) -> Settings:
    """Merge flags (attr -> value, None = not given), environment, TOML file and defaults.

    ``config_path`` is --config; else TEMPCTL_CONFIG; else ``default_config`` (by default
    /etc/tempctl/tempctl.toml), which may be missing. Raises ConfigError.
    """
    environ = os.environ if environ is None else environ
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    for attr in given:
        if attr not in BY_ATTR:
            raise TypeError(f"load_settings: unknown setting {attr!r}")

    check_env_file(environ.get(ENV_FILE_ENV))
    path, label = _pick_config(config_path, environ, default_config or DEFAULT_CONFIG_PATH)
    data = read_toml(path, label)
    from_file = _file_values(data, path) if data is not None else {}

    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    names: dict[str, str] = {}
    for f in FIELDS:
        if f.attr in given:
            raw, source, name = given[f.attr], COMMAND_LINE, f.flag
        elif f.env in environ:
            raw, source, name = environ[f.env], ENVIRONMENT, f.env
        elif f.attr in from_file:
            raw, source, name = from_file[f.attr], path, f.env
        else:
            values[f.attr] = _default_db(environ) if f.attr == "db" else f.default
            sources[f.attr] = DEFAULT
            continue
        if isinstance(raw, tuple) and f.type == "devices":  # already parsed [[devices]]
            values[f.attr] = raw
        elif f.type == "devices":
            try:
                values[f.attr] = _parse(f, raw)
            except ValueError as e:
                raise ConfigError(one_line(f"{name}={_fmt(raw)} ({source}): {e}")) from None
        else:
            values[f.attr] = _parse_checked(f, raw, name, source)
        sources[f.attr] = source
        names[f.attr] = name

    warnings = [
        f"unknown environment variable {key} ignored{_hint(key)}"
        for key in sorted(environ)
        if key.startswith("TEMPCTL_") and key not in _KNOWN_ENV
    ]
    for attr, name in names.items():
        f = BY_ATTR[attr]
        warnings += _notes(f, values[attr], name, sources[attr], f.deprecated in names)
    for device in values.get("devices") or ():
        where, file = device.where or device.name, sources.get("devices", DEFAULT)
        for attr, v in device.overrides.items():
            f = BY_ATTR[attr]
            warnings += _notes(f, v, f"{where}.{f.toml}", file, f.deprecated in device.overrides)
    settings = Settings(
        **values,
        sources=sources,
        warnings=tuple(warnings),  # type: ignore[arg-type]
        config_path=path if data is not None else None,
    )
    _check_rules(settings, lambda a: _origin(settings, a))
    for device in settings.devices:
        settings.for_device(device)  # validates each device's overrides against the rest
    settings = _aliased(settings, "min_frequency" in names)
    if require_devices and not settings.devices:
        raise ConfigError(
            "BITAXE_IP (not set): give the device address with --bitaxe-ip, "
            "BITAXE_IP or bitaxe_ip / [[devices]] in the config file"
        )
    return settings


def _notes(f: Field, value: object, name: str, source: str, new_given: bool) -> list[str]:
    """Warnings for one given value: plausible but unusual, or a deprecated name."""
    out = []
    text = f.unusual(value) if f.unusual else None
    if text:
        out.append(f"{name}={_fmt(value)} ({source}): {text}")
    if f.deprecated:
        new = BY_ATTR[f.deprecated]
        tail = f"{new.env} is set too and wins" if new_given else f"use {new.env} instead"
        out.append(f"{name} ({source}) is deprecated: {tail}")
    return out


def _aliased(s: Settings, min_given: bool, overrides: Mapping[str, object] = {}) -> Settings:
    """TEMPCTL_CRITICAL_FLOOR is the old name of TEMPCTL_MIN_FREQUENCY: the old one applies
    when only it is set; both attributes then carry the one value (the controller of
    tempctl 0.1 reads ``critical_floor``)."""
    floor_given = "critical_floor" in overrides or (
        not overrides and s.sources.get("critical_floor", DEFAULT) != DEFAULT
    )
    low = s.min_frequency
    if floor_given and not min_given:
        low = s.critical_floor
    return replace(s, min_frequency=low, critical_floor=low)


def _hint(env_name: str) -> str:
    close = difflib.get_close_matches(env_name, sorted(_KNOWN_ENV), n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def parse_assignment(text: str) -> tuple[str, object]:
    """Parse "TEMP_THRESHOLD=62", "temp_threshold=62" or "--temp-threshold=62" for --set.

    Returns (attr, value), the value parsed and range-checked on its own (cross-field
    rules need the whole Settings: apply it with dataclasses.replace and re-check).
    """
    name, sep, raw = text.partition("=")
    name = name.strip()
    f = next((f for f in FIELDS if name in (f.env, f.toml, f.attr, f.flag)), None)
    if f is None:
        f = next((f for f in FIELDS if name.upper() == f.env), None)
    if not sep or f is None:
        what = "unknown setting" if sep else "expected NAME=VALUE"
        raise ConfigError(f"{text} (--set): {what}{_hint(name.upper()) if sep else ''}")
    if f.type == "devices":
        try:
            return f.attr, _parse(f, raw)
        except ValueError as e:
            raise ConfigError(one_line(f"{name}={raw} (--set): {e}")) from None
    return f.attr, _parse_checked(f, raw, name, "--set")


def validate(settings: Settings) -> Settings:
    """Re-check the cross-field rules, e.g. after applying parse_assignment results."""
    _check_rules(settings, lambda a: _origin(settings, a))
    for device in settings.devices:
        settings.for_device(device)
    return settings


def describe(settings: Settings) -> dict[str, Any]:
    """Every effective value with its source, as plain JSON-ready data (for `tempctl config`)."""
    out: dict[str, Any] = {}
    for f in FIELDS:
        value = getattr(settings, f.attr)
        if f.type == "devices":
            value = [d.url for d in value]
        out[f.attr] = {
            "env": f.env,
            "value": value,
            "source": settings.sources.get(f.attr, DEFAULT),
        }
    return {
        "config_file": settings.config_path,
        "settings": out,
        "devices": [
            {"name": d.name, "url": d.url, "overrides": dict(d.overrides)} for d in settings.devices
        ],
        "warnings": list(settings.warnings),
    }


__all__ = [
    "BY_ATTR",
    "FIELDS",
    "ConfigError",
    "Device",
    "Field",
    "Settings",
    "describe",
    "load_settings",
    "parse_assignment",
    "validate",
]


def config_dict(settings: Settings) -> dict:
    """The effective settings as the JSON a run row keeps (``runs.config``)."""
    return {k: v for k, v in asdict(settings).items() if k != "sources"}
