"""tempctl.config: precedence, every setting's names, validation messages, files, devices.

Parsing only: no network traffic (device URLs are only normalised, never contacted).
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tempctl.config import (
    FIELDS,
    ConfigError,
    Device,
    Settings,
    describe,
    load_settings,
    parse_assignment,
    validate,
)

# The device password file must exist to be valid (its contents are never shown).
_PASSWORD_FILE = Path(tempfile.mkdtemp(prefix="tempctl-test-")) / "device-password"
_PASSWORD_FILE.write_text("sample-password\n")
_PASSWORD_FILE.chmod(0o600)  # readable by others would load with a warning

# One valid, non-default value per setting, as text (env / flag) and as the parsed value.
SAMPLES = {
    "devices": (
        "10.0.0.5, 10.0.0.6:8080",
        (Device("10.0.0.5", "http://10.0.0.5"), Device("10.0.0.6:8080", "http://10.0.0.6:8080")),
    ),
    "temp_threshold": ("65", 65.0),
    "first_frequency": ("500", 500.0),
    "second_frequency": ("410", 410.0),
    "max_frequency": ("550", 550.0),
    "check_interval": ("0.5", 0.5),
    "stable_timeframe": ("0.004", 0.004),
    "db": ("/var/lib/tempctl/log.db", "/var/lib/tempctl/log.db"),
    "settle": ("3", 3.0),
    "hysteresis": ("1.5", 1.5),
    "critical": ("68", 68.0),
    "vr_threshold": ("90", 90.0),
    "critical_floor": ("300", 300.0),
    "min_frequency": ("250", 250.0),
    "law": ("levels", "levels"),
    "restore_after_trip": ("false", False),
    "user_cap": ("off", "off"),
    "user_cap_hours": ("12", 12.0),
    "power_limit": ("18.5", 18.5),
    "power_budget": ("40", 40.0),
    "step": ("12.5", 12.5),
    "apply": ("restart", "restart"),
    "dry_run": ("1", True),
    "max_restarts_per_hour": ("2", 2),
    "log_level": ("debug", "DEBUG"),
    "retention_days": ("7", 7.0),
    "voltage": ("auto", "auto"),
    "min_voltage": ("1050", 1050),
    "max_voltage": ("1150", 1150),
    "goal": ("efficiency", "efficiency"),
    "alert_url": ("https://ntfy.sh/my-bitaxe", "https://ntfy.sh/my-bitaxe"),
    "metrics_port": ("9101", 9101),
    "metrics_host": ("::1", "::1"),
    "device_password_file": (str(_PASSWORD_FILE), str(_PASSWORD_FILE)),
    "alert_password_file": (str(_PASSWORD_FILE), str(_PASSWORD_FILE)),
    "mqtt_url": ("mqtts://ha@127.0.0.1:8883", "mqtts://ha@127.0.0.1:8883"),
    "mqtt_password_file": (str(_PASSWORD_FILE), str(_PASSWORD_FILE)),
    "mqtt_prefix": ("bitaxes/garage", "bitaxes/garage"),
    "mqtt_discovery": ("ha", "ha"),
    "mqtt_control": ("on", True),
}
BY_ATTR = {f.attr: f for f in FIELDS}


@pytest.fixture
def absent(tmp_path):
    """A default config path that does not exist, so /etc/tempctl is never read."""
    return str(tmp_path / "absent.toml")


@pytest.fixture
def toml_file(tmp_path):
    def write(text: str, name: str = "tempctl.toml", mode: int = 0o644) -> str:
        path = tmp_path / name
        path.write_text(text)
        path.chmod(mode)
        return str(path)

    return write


def load(absent, env=None, flags=None, config_path=None, require_devices=False):
    return load_settings(
        flags, env or {}, config_path, require_devices=require_devices, default_config=absent
    )


def error_of(absent, **kw) -> str:
    with pytest.raises(ConfigError) as info:
        load(absent, **kw)
    return str(info.value)


# --- the table ----------------------------------------------------------------------------


def test_settings_attributes_follow_fields():
    attrs = [f.name for f in dataclasses.fields(Settings)]
    assert attrs[: len(FIELDS)] == [f.attr for f in FIELDS]
    assert set(SAMPLES) == {f.attr for f in FIELDS}, "every setting needs a sample below"


def test_names_are_unique_and_follow_conventions():
    for column in ("attr", "env", "toml", "flag"):
        names = [getattr(f, column) for f in FIELDS]
        assert len(set(names)) == len(names), column
    for f in FIELDS:
        assert f.flag.startswith("--") and f.flag == f.flag.lower()
        assert f.env == f.env.upper() and f.help


def test_defaults(absent):
    s = load(absent)
    for f in FIELDS:
        assert getattr(s, f.attr) == f.default, f.attr
        assert s.sources[f.attr] == "default"
    assert s.config_path is None and s.warnings == ()
    assert s == Settings(sources=s.sources)  # the dataclass defaults are the table's


def test_devices_required_by_default(absent):
    with pytest.raises(ConfigError) as info:
        load_settings({}, {}, default_config=absent)
    assert str(info.value).startswith("BITAXE_IP (not set): ")


# --- precedence ---------------------------------------------------------------------------


PRESENCE = list(itertools.product([False, True], repeat=3))


@pytest.mark.parametrize("in_file,in_env,in_flag", PRESENCE)
def test_precedence(absent, toml_file, in_file, in_env, in_flag):
    path = toml_file("temp_threshold = 50\n" if in_file else "")
    env = {"TEMP_THRESHOLD": "55"} if in_env else {}
    flags = {"temp_threshold": "60", "max_frequency": None}  # None = flag not given
    if not in_flag:
        flags["temp_threshold"] = None
    s = load(absent, env=env, flags=flags, config_path=path)
    expected = (
        (60.0, "command line")
        if in_flag
        else (55.0, "environment")
        if in_env
        else (50.0, path)
        if in_file
        else (63.0, "default")
    )
    assert (s.temp_threshold, s.sources["temp_threshold"]) == expected
    assert s.sources["max_frequency"] == "default"


@pytest.mark.parametrize("attr", list(SAMPLES))
@pytest.mark.parametrize("where", ["environment", "command line"])
def test_every_setting_by_env_and_flag(absent, attr, where):
    text, expected = SAMPLES[attr]
    f = BY_ATTR[attr]
    if where == "environment":
        s = load(absent, env={f.env: text})
    else:
        s = load(absent, flags={attr: text})
    assert getattr(s, attr) == expected
    assert s.sources[attr] == where


def test_every_setting_in_toml(absent, toml_file):
    lines = []
    for attr, (text, value) in SAMPLES.items():
        f = BY_ATTR[attr]
        if isinstance(value, bool):
            literal = "true" if value else "false"
        elif isinstance(value, (int, float)):
            literal = text
        else:
            literal = f'"{text}"'
        lines.append(f"{f.toml} = {literal}")
    path = toml_file("\n".join(lines) + "\n")
    s = load(absent, config_path=path)
    for attr, (_, value) in SAMPLES.items():
        if attr == "critical_floor":  # the deprecated name: TEMPCTL_MIN_FREQUENCY wins
            value = SAMPLES["min_frequency"][1]
        assert getattr(s, attr) == value, attr
        assert s.sources[attr] == path
    assert s.config_path == path


def test_original_script_unit(absent):
    # The environment of the original script's systemd units (shared/reference/peers.md).
    env = {
        "BITAXE_IP": "192.168.1.50",
        "TEMP_THRESHOLD": "65",
        "FIRST_FREQUENCY": "500",
        "SECOND_FREQUENCY": "410",
        "CHECK_INTERVAL": "300",
        "MAX_FREQUENCY": "575",
        "STABLE_TIMEFRAME": "1",
    }
    s = load_settings(environ=env, default_config=absent)  # devices required, and given
    assert s.devices == (Device("192.168.1.50", "http://192.168.1.50"),)
    assert (s.temp_threshold, s.first_frequency, s.second_frequency) == (65, 500, 410)
    assert (s.check_interval, s.max_frequency, s.stable_timeframe) == (300, 575, 1)


def test_short_intervals_for_tests_and_demos(absent):
    s = load(
        absent, env={"CHECK_INTERVAL": "0.5", "STABLE_TIMEFRAME": "0.004", "TEMPCTL_SETTLE": "3"}
    )
    assert (s.check_interval, s.stable_timeframe, s.settle) == (0.5, 0.004, 3.0)
    assert s.stable_seconds == pytest.approx(14.4)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("1", True),
        ("0", False),
        ("true", True),
        ("FALSE", False),
        ("yes", True),
        ("no", False),
        ("on", True),
        ("off", False),
        (" On ", True),
    ],
)
def test_dry_run_forms(absent, text, expected):
    assert load(absent, env={"TEMPCTL_DRY_RUN": text}).dry_run is expected


def test_dry_run_flag_false_beats_env(absent):
    s = load(absent, env={"TEMPCTL_DRY_RUN": "1"}, flags={"dry_run": False})
    assert s.dry_run is False and s.sources["dry_run"] == "command line"


def test_db_default_under_systemd(absent):
    s = load(absent, env={"STATE_DIRECTORY": "/var/lib/tempctl:/var/lib/other"})
    assert s.db == "/var/lib/tempctl/tempctl.db" and s.sources["db"] == "default"
    assert load(absent).db == "./tempctl.db"
    assert load(absent, env={"STATE_DIRECTORY": "/s", "TEMPCTL_DB": "/x.db"}).db == "/x.db"


def test_unknown_flag_is_a_programming_error(absent):
    with pytest.raises(TypeError):
        load(absent, flags={"temp_treshold": "60"})


# --- validation messages ------------------------------------------------------------------

E = "environment"
BELOW_TRIP = "(below the firmware's 75 °C trip, axeos-api.md §9.1)"
TRIP = "(the firmware trips above {} °C, axeos-api.md §9.1)"
CASES = [
    ({"TEMP_THRESHOLD": "abc"}, {}, "TEMP_THRESHOLD=abc (environment): not a number"),
    (
        {},
        {"check_interval": "0.1"},
        "--check-interval=0.1 (command line): must be between 0.2 and 600 (seconds)",
    ),
    ({"CHECK_INTERVAL": "nan"}, {}, "CHECK_INTERVAL=nan (environment): not a finite number"),
    ({"CHECK_INTERVAL": "inf"}, {}, "CHECK_INTERVAL=inf (environment): not a finite number"),
    ({"TEMP_THRESHOLD": "6\n3"}, {}, "TEMP_THRESHOLD='6\\n3' (environment): not a number"),
    (
        {"TEMP_THRESHOLD": "29"},
        {},
        "TEMP_THRESHOLD=29 (environment): must be between 30 and 74 " + BELOW_TRIP,
    ),
    (
        {"TEMP_THRESHOLD": "95.5"},
        {},
        "TEMP_THRESHOLD=95.5 (environment): must be between 30 and 74 " + BELOW_TRIP,
    ),
    (
        {"FIRST_FREQUENCY": "40"},
        {},
        "FIRST_FREQUENCY=40 (environment): must be between 50 and 1500",
    ),
    ({"SECOND_FREQUENCY": ""}, {}, "SECOND_FREQUENCY= (environment): not a number"),
    (
        {"MAX_FREQUENCY": "1600"},
        {},
        "MAX_FREQUENCY=1600 (environment): must be between 50 and 1500",
    ),
    (
        {"STABLE_TIMEFRAME": "0"},
        {},
        "STABLE_TIMEFRAME=0 (environment): must be above 0 and at most 168 (hours)",
    ),
    (
        {"TEMPCTL_SETTLE": "-1"},
        {},
        "TEMPCTL_SETTLE=-1 (environment): must be between 0 and 3600 (seconds)",
    ),
    (
        {"TEMPCTL_HYSTERESIS": "-0.5"},
        {},
        "TEMPCTL_HYSTERESIS=-0.5 (environment): must be between 0 and 10 (°C)",
    ),
    (
        {"TEMPCTL_CRITICAL": "101"},
        {},
        "TEMPCTL_CRITICAL=101 (environment): must be between 31 and 75 " + TRIP.format(75),
    ),
    (
        {"TEMPCTL_VR_THRESHOLD": "39"},
        {},
        "TEMPCTL_VR_THRESHOLD=39 (environment): must be between 40 and 105 " + TRIP.format(105),
    ),
    (
        {"TEMPCTL_VR_THRESHOLD": "106"},
        {},
        "TEMPCTL_VR_THRESHOLD=106 (environment): must be between 40 and 105 " + TRIP.format(105),
    ),
    (
        {"TEMPCTL_CRITICAL_FLOOR": "30"},
        {},
        "TEMPCTL_CRITICAL_FLOOR=30 (environment): must be 0 (auto) or between 50 and 1500",
    ),
    ({"TEMPCTL_STEP": "0"}, {}, "TEMPCTL_STEP=0 (environment): must be between 1 and 200 (MHz)"),
    (
        {"TEMPCTL_STEP": "201"},
        {},
        "TEMPCTL_STEP=201 (environment): must be between 1 and 200 (MHz)",
    ),
    (
        {"TEMPCTL_APPLY": "fast"},
        {},
        "TEMPCTL_APPLY=fast (environment): must be one of auto, live, restart",
    ),
    (
        {"TEMPCTL_DRY_RUN": "maybe"},
        {},
        (
            "TEMPCTL_DRY_RUN=maybe (environment): "
            "not a boolean (use 1/0, true/false, yes/no or on/off)"
        ),
    ),
    (
        {"TEMPCTL_MAX_RESTARTS_PER_HOUR": "1.5"},
        {},
        "TEMPCTL_MAX_RESTARTS_PER_HOUR=1.5 (environment): not a whole number",
    ),
    (
        {"TEMPCTL_MAX_RESTARTS_PER_HOUR": "-1"},
        {},
        "TEMPCTL_MAX_RESTARTS_PER_HOUR=-1 (environment): must be between 0 and 60",
    ),
    (
        {"TEMPCTL_LOG_LEVEL": "TRACE"},
        {},
        "TEMPCTL_LOG_LEVEL=TRACE (environment): must be one of DEBUG, INFO, WARNING, ERROR",
    ),
    (
        {"TEMPCTL_RETENTION_DAYS": "-1"},
        {},
        "TEMPCTL_RETENTION_DAYS=-1 (environment): must be between 0 and 3650 (days; 0 = keep all)",
    ),
    (
        {"TEMPCTL_ALERT_URL": "ftp://ntfy.sh/x"},
        {},
        (
            "TEMPCTL_ALERT_URL=ftp://ntfy.sh/x (environment): "
            "must be an http:// or https:// URL (or empty)"
        ),
    ),
    (
        {"TEMPCTL_METRICS_PORT": "70000"},
        {},
        "TEMPCTL_METRICS_PORT=70000 (environment): must be between 0 and 65535",
    ),
    (
        {"TEMPCTL_METRICS_HOST": "bad host"},
        {},
        "TEMPCTL_METRICS_HOST=bad host (environment): must be a host name or IP address",
    ),
    ({"TEMPCTL_DB": ""}, {}, "TEMPCTL_DB= (environment): must not be empty"),
    # cross-field rules name the side set with the higher precedence
    (
        {"SECOND_FREQUENCY": "500"},
        {},
        "SECOND_FREQUENCY=500 (environment): must be less than FIRST_FREQUENCY=490 (default)",
    ),
    (
        {"FIRST_FREQUENCY": "490", "SECOND_FREQUENCY": "490"},
        {},
        "SECOND_FREQUENCY=490 (environment): must be less than FIRST_FREQUENCY=490 (environment)",
    ),
    (
        {"FIRST_FREQUENCY": "600"},
        {},
        "FIRST_FREQUENCY=600 (environment): must be <= MAX_FREQUENCY=575 (default)",
    ),
    (
        {"MAX_FREQUENCY": "450"},
        {},
        "MAX_FREQUENCY=450 (environment): must be >= FIRST_FREQUENCY=490 (default)",
    ),
    (
        {"FIRST_FREQUENCY": "500"},
        {"max_frequency": "450"},
        "--max-frequency=450 (command line): must be >= FIRST_FREQUENCY=500 (environment)",
    ),
    (
        {"TEMPCTL_CRITICAL": "60"},
        {},
        "TEMPCTL_CRITICAL=60 (environment): must be greater than TEMP_THRESHOLD=63 (default)",
    ),
    (
        {"TEMP_THRESHOLD": "72"},
        {},
        "TEMP_THRESHOLD=72 (environment): must be less than TEMPCTL_CRITICAL=70 (default)",
    ),
    (
        {"TEMPCTL_CRITICAL_FLOOR": "450"},
        {},
        "TEMPCTL_CRITICAL_FLOOR=450 (environment): must be <= SECOND_FREQUENCY=400 (default)",
    ),
    (
        {"TEMPCTL_CRITICAL_FLOOR": "350"},
        {"second_frequency": "300"},
        (
            "--second-frequency=300 (command line): must be >= TEMPCTL_CRITICAL_FLOOR=350 "
            "(environment)"
        ),
    ),
]


@pytest.mark.parametrize("env,flags,message", CASES, ids=[c[2].split(":")[0] for c in CASES])
def test_validation_message(absent, env, flags, message):
    assert error_of(absent, env=env, flags=flags) == message


def test_valid_edges_pass(absent):
    s = load(
        absent,
        env={
            "TEMP_THRESHOLD": "30",
            "CHECK_INTERVAL": "0.2",
            "TEMPCTL_CRITICAL_FLOOR": "400",
            "TEMPCTL_STEP": "200",
            "TEMPCTL_VR_THRESHOLD": "105",
            "TEMPCTL_ALERT_URL": "",
        },
    )
    assert (s.temp_threshold, s.critical_floor, s.alert_url) == (30, 400, "")


def test_file_source_named_by_path(absent, toml_file):
    path = toml_file("first_frequency = 380\n")
    assert error_of(absent, config_path=path) == (
        f"FIRST_FREQUENCY=380 ({path}): must be greater than SECOND_FREQUENCY=400 (default)"
    )


def test_toml_type_errors(absent, toml_file):
    path = toml_file("temp_threshold = true\n")
    assert error_of(absent, config_path=path) == f"TEMP_THRESHOLD=true ({path}): not a number"
    path = toml_file("metrics_port = 9100.5\n", name="b.toml")
    assert error_of(absent, config_path=path) == (
        f"TEMPCTL_METRICS_PORT=9100.5 ({path}): not a whole number"
    )


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS), text=st.text(max_size=20))
def test_any_text_is_parsed_or_refused_on_one_line(tmp_path_factory, field, text):
    absent = str(tmp_path_factory.getbasetemp() / "absent.toml")
    try:
        load(absent, env={field.env: text})
    except ConfigError as e:
        message = str(e)
        assert message.startswith(field.env + "=")
        assert len(message.splitlines()) == 1


# --- the file -----------------------------------------------------------------------------


def test_world_writable_file_refused(absent, toml_file):
    path = toml_file("temp_threshold = 60\n", mode=0o666)
    message = error_of(absent, config_path=path)
    assert message == f"{path}: refusing a world-writable config file (fix with: chmod o-w {path})"
    # also when found through TEMPCTL_CONFIG or as the default path
    assert error_of(absent, env={"TEMPCTL_CONFIG": path}) == message
    assert error_of(path) == message


def test_group_writable_file_accepted(absent, toml_file):
    path = toml_file("temp_threshold = 60\n", mode=0o664)
    assert load(absent, config_path=path).temp_threshold == 60


def test_missing_files(absent, tmp_path):
    missing = str(tmp_path / "nope.toml")
    assert error_of(absent, config_path=missing) == (
        f"--config={missing} (command line): file not found"
    )
    assert error_of(absent, env={"TEMPCTL_CONFIG": missing}) == (
        f"TEMPCTL_CONFIG={missing} (environment): file not found"
    )
    assert load(absent).config_path is None  # the default path may be missing


def test_default_path_read_when_present(toml_file):
    path = toml_file("check_interval = 5\n")
    s = load_settings(environ={}, require_devices=False, default_config=path)
    assert (s.check_interval, s.sources["check_interval"], s.config_path) == (5, path, path)


def test_config_flag_beats_tempctl_config(absent, toml_file):
    a = toml_file("check_interval = 5\n", name="a.toml")
    b = toml_file("check_interval = 7\n", name="b.toml")
    assert load(absent, env={"TEMPCTL_CONFIG": a}).check_interval == 5
    assert load(absent, env={"TEMPCTL_CONFIG": a}, config_path=b).check_interval == 7


def test_unknown_toml_key(absent, toml_file):
    path = toml_file("temp_treshold = 60\n")
    assert error_of(absent, config_path=path) == (
        f"temp_treshold ({path}): unknown key; did you mean temp_threshold?"
    )
    path = toml_file("colour = 'red'\n", name="c.toml")
    assert error_of(absent, config_path=path) == f"colour ({path}): unknown key"


def test_bad_toml_and_directory(absent, toml_file, tmp_path):
    path = toml_file("temp_threshold = = 60\n")
    message = error_of(absent, config_path=path)
    assert message.startswith(f"{path}: not valid TOML: ") and "\n" not in message
    message = error_of(absent, config_path=str(tmp_path))
    assert message.startswith(f"{tmp_path}: ")


def test_unknown_tempctl_env_is_a_warning(absent, toml_file):
    env = {
        "TEMPCTL_SETTL": "60",
        "TEMPCTL_CONFIG": toml_file(""),
        "TEMPCTL_SETTLE": "5",
        "TEMP_OTHER": "1",
    }
    s = load(absent, env=env)
    assert s.warnings == (
        "unknown environment variable TEMPCTL_SETTL ignored (did you mean TEMPCTL_SETTLE?)",
    )
    assert s.settle == 5


# --- [[devices]] --------------------------------------------------------------------------

DEVICES_TOML = """\
temp_threshold = 62

[[devices]]
name = "gamma"
url = "10.0.0.5"
max_frequency = 550
apply = "live"

[[devices]]
url = "http://10.0.0.6:8080"
"""


def test_device_tables(absent, toml_file):
    path = toml_file(DEVICES_TOML)
    s = load(absent, config_path=path)
    gamma, other = s.devices
    assert gamma == Device(
        "gamma", "http://10.0.0.5", {"max_frequency": 550.0, "apply": "live"}, "devices[0]"
    )
    assert (other.name, other.url, dict(other.overrides)) == (
        "10.0.0.6:8080",
        "http://10.0.0.6:8080",
        {},
    )
    assert s.sources["devices"] == path
    g = s.for_device(gamma)
    assert (g.max_frequency, g.apply, g.temp_threshold) == (550.0, "live", 62.0)
    assert g.sources["max_frequency"] == f"devices[0] in {path}"
    assert g.sources["temp_threshold"] == path
    assert s.for_device(other) is s
    assert {gamma: 1}[gamma] == 1  # hashable, so usable as a key for per-device state


def test_device_override_range_message(absent, toml_file, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    toml_file(
        '[[devices]]\nurl = "10.0.0.5"\n[[devices]]\nurl = "10.0.0.6"\nmax_frequency = 2000\n'
    )
    assert error_of(absent, config_path="tempctl.toml") == (
        "devices[1].max_frequency=2000 (tempctl.toml): must be between 50 and 1500"
    )


@pytest.mark.parametrize(
    "table,env,message",
    [
        (
            "first_frequency = 380",
            {},
            "devices[0].first_frequency=380 ({p}): "
            "must be greater than SECOND_FREQUENCY=400 (default)",
        ),
        # the per-device value is applied last, so it is the one named even against the environment
        (
            "first_frequency = 440",
            {"SECOND_FREQUENCY": "450"},
            (
                "devices[0].first_frequency=440 ({p}): must be greater than SECOND_FREQUENCY=450 "
                "(environment)"
            ),
        ),
        (
            "critical = 60",
            {},
            "devices[0].critical=60 ({p}): must be greater than TEMP_THRESHOLD=63 (default)",
        ),
        ("check_interval = 5", {}, "devices[0].check_interval ({p}): not a per-device setting"),
        (
            "max_freq = 500",
            {},
            ("devices[0].max_freq ({p}): unknown key; did you mean devices[0].max_frequency?"),
        ),
        (
            'apply = "sometimes"',
            {},
            "devices[0].apply=sometimes ({p}): must be one of auto, live, restart",
        ),
    ],
)
def test_device_override_errors(absent, toml_file, table, env, message):
    path = toml_file(f'[[devices]]\nurl = "10.0.0.5"\n{table}\n')
    got = error_of(absent, env=env, config_path=path)
    if "not a per-device" in message:
        assert got.startswith(message.format(p=path))
    else:
        assert got == message.format(p=path)


@pytest.mark.parametrize(
    "text,message",
    [
        ('[[devices]]\nname = "a"\n', "devices[0] ({p}): missing url"),
        (
            '[[devices]]\nname = "a"\nurl = "10.0.0.5"\n'
            '[[devices]]\nname = "a"\nurl = "10.0.0.6"\n',
            "devices[1].name=a ({p}): same name as devices[0]",
        ),
        (
            '[[devices]]\nurl = "10.0.0.5"\n[[devices]]\nname = "b"\nurl = "http://10.0.0.5/"\n',
            "devices[1].url=http://10.0.0.5/ ({p}): same device as devices[0]",
        ),
        (
            'bitaxe_ip = "10.0.0.5"\n[[devices]]\nurl = "10.0.0.6"\n',
            "devices ({p}): use either bitaxe_ip or [[devices]], not both",
        ),
        (
            '[devices]\nurl = "10.0.0.6"\n',
            "devices ({p}): must be an array of tables ([[devices]])",
        ),
    ],
)
def test_device_table_errors(absent, toml_file, text, message):
    path = toml_file(text)
    assert error_of(absent, config_path=path) == message.format(p=path)


def test_bitaxe_ip_forms_in_toml(absent, toml_file):
    path = toml_file('bitaxe_ip = ["10.0.0.5", "10.0.0.6"]\n')
    assert [d.url for d in load(absent, config_path=path).devices] == [
        "http://10.0.0.5",
        "http://10.0.0.6",
    ]


def test_env_devices_replace_file_devices(absent, toml_file):
    path = toml_file(DEVICES_TOML)
    s = load(absent, env={"BITAXE_IP": "10.0.0.9"}, config_path=path)
    assert s.devices == (Device("10.0.0.9", "http://10.0.0.9"),)
    assert s.sources["devices"] == "environment"


# --- device URL forms ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,url,name",
    [
        ("http://10.0.0.5", "http://10.0.0.5", "10.0.0.5"),
        ("10.0.0.5", "http://10.0.0.5", "10.0.0.5"),
        ("10.0.0.5:8080", "http://10.0.0.5:8080", "10.0.0.5:8080"),
        ("bitaxe.local:80", None, None),
        ("[::1]:8080", "http://[::1]:8080", "[::1]:8080"),
        ("http://10.0.0.5/", "http://10.0.0.5", "10.0.0.5"),
    ],
)
def test_url_forms_accepted(absent, text, url, name):
    (device,) = load(absent, env={"BITAXE_IP": text}).devices
    if url is not None:
        assert (device.url, device.name) == (url, name)
    assert device.url.startswith("http://") and not device.url.endswith("/")


@pytest.mark.parametrize("text", ["https://10.0.0.5", "ftp://10.0.0.5", " , "])
def test_url_forms_refused(absent, text):
    message = error_of(absent, env={"BITAXE_IP": text})
    assert message.startswith(f"BITAXE_IP={text} (environment): ")
    assert len(message.splitlines()) == 1


def test_device_listed_twice(absent):
    assert error_of(absent, env={"BITAXE_IP": "10.0.0.5,http://10.0.0.5"}) == (
        "BITAXE_IP=10.0.0.5,http://10.0.0.5 (environment): http://10.0.0.5 is listed twice"
    )


# --- helpers ------------------------------------------------------------------------------


def test_as_env_round_trip(absent):
    env = {BY_ATTR[a].env: text for a, (text, _) in SAMPLES.items()}
    s = load(absent, env=env)
    again = load(absent, env=s.as_env())
    assert again.warnings == ()  # as_env never writes a deprecated name
    assert dataclasses.replace(again, sources=s.sources, warnings=s.warnings) == s
    assert s.as_env()["FIRST_FREQUENCY"] == "500" and s.as_env()["TEMPCTL_DRY_RUN"] == "true"
    assert "BITAXE_IP" not in load(absent).as_env()


@pytest.mark.parametrize(
    "text,expected",
    [
        ("TEMP_THRESHOLD=62", ("temp_threshold", 62.0)),
        ("temp_threshold=62", ("temp_threshold", 62.0)),
        ("--check-interval=0.5", ("check_interval", 0.5)),
        ("tempctl_apply=live", ("apply", "live")),
        ("TEMPCTL_DRY_RUN=yes", ("dry_run", True)),
    ],
)
def test_parse_assignment(text, expected):
    assert parse_assignment(text) == expected


@pytest.mark.parametrize(
    "text,message",
    [
        ("TEMP_THRESHOLD=abc", "TEMP_THRESHOLD=abc (--set): not a number"),
        ("STEP=500", "STEP=500 (--set): unknown setting"),
        ("nonsense", "nonsense (--set): expected NAME=VALUE"),
        ("TEMPCTL_STEP=500", "TEMPCTL_STEP=500 (--set): must be between 1 and 200 (MHz)"),
    ],
)
def test_parse_assignment_errors(text, message):
    with pytest.raises(ConfigError) as info:
        parse_assignment(text)
    assert str(info.value).startswith(message)


def test_validate_after_replace(absent):
    s = load(absent)
    attr, value = parse_assignment("FIRST_FREQUENCY=380")
    with pytest.raises(ConfigError, match="must be less than FIRST_FREQUENCY=380"):
        validate(dataclasses.replace(s, **{attr: value}))
    assert validate(s) is s


def test_describe(absent):
    info = describe(load(absent, env={"BITAXE_IP": "10.0.0.5", "TEMP_THRESHOLD": "60"}))
    assert info["settings"]["temp_threshold"] == {
        "env": "TEMP_THRESHOLD",
        "value": 60.0,
        "source": "environment",
    }
    assert info["settings"]["devices"]["value"] == ["http://10.0.0.5"]
    assert info["devices"] == [{"name": "10.0.0.5", "url": "http://10.0.0.5", "overrides": {}}]
    assert list(info["settings"]) == [f.attr for f in FIELDS]


def test_no_lan_default():
    # project rule: no LAN address in any default
    for f in FIELDS:
        assert not str(f.default).startswith(("192.168.", "10.", "172.")), f.attr
    assert os.path.basename(BY_ATTR["db"].default) == "tempctl.db"


def test_world_writable_env_file_is_refused(tmp_path):
    env_file = tmp_path / "tempctl.env"
    env_file.write_text("BITAXE_IP=127.0.0.1\n")
    env_file.chmod(0o646)
    with pytest.raises(ConfigError, match="world-writable environment file"):
        load_settings(
            environ={"BITAXE_IP": "127.0.0.1", "TEMPCTL_ENV_FILE": str(env_file)},
            config_path=None,
            default_config=str(tmp_path / "none.toml"),
        )
    env_file.chmod(0o640)
    s = load_settings(
        environ={"BITAXE_IP": "127.0.0.1", "TEMPCTL_ENV_FILE": str(env_file)},
        default_config=str(tmp_path / "none.toml"),
    )
    assert not s.warnings


# --- issue 13.7: every value has a physically meaningful range -----------------------------

# Values accepted before issue 13.7, each nonsense: (env, value, the range the error names).
ABSURD = [
    ("STABLE_TIMEFRAME", "1e300", "at most 168 (hours)"),  # crashed the window query
    ("STABLE_TIMEFRAME", "3600", "at most 168 (hours)"),  # 150 days: seconds meant
    ("CHECK_INTERVAL", "1e12", "between 0.2 and 600 (seconds)"),
    ("TEMPCTL_SETTLE", "1e300", "between 0 and 3600 (seconds)"),
    ("TEMPCTL_HYSTERESIS", "100", "between 0 and 10 (°C)"),
    ("TEMPCTL_CRITICAL", "99", "between 31 and 75 (the firmware trips above 75 °C"),
    ("TEMPCTL_STEP", "0.001", "between 1 and 200 (MHz)"),
    ("TEMPCTL_RETENTION_DAYS", "1e300", "between 0 and 3650"),
    ("TEMPCTL_MAX_RESTARTS_PER_HOUR", "1000000", "between 0 and 60"),
    ("TEMPCTL_MIN_FREQUENCY", "30", "0 (auto) or between 50 and 1500"),
]


@pytest.mark.parametrize("env,value,range_", ABSURD, ids=[f"{a[0]}={a[1]}" for a in ABSURD])
def test_absurd_values_are_refused_naming_the_range(absent, env, value, range_):
    message = error_of(absent, env={env: value})
    assert message.startswith(f"{env}={value} (environment): must be "), message
    assert range_ in message and len(message.splitlines()) == 1, message


NUMERIC = [f for f in FIELDS if f.type in ("float", "int")]


@pytest.mark.parametrize("field", NUMERIC, ids=[f.env for f in NUMERIC])
def test_every_number_has_an_upper_bound(absent, field):
    huge = "1e300" if field.type == "float" else str(10**18)
    message = error_of(absent, env={field.env: huge})
    assert message.startswith(f"{field.env}={huge} (environment): must be "), message


def test_min_frequency_is_at_most_second_frequency(absent):
    assert error_of(absent, env={"TEMPCTL_MIN_FREQUENCY": "450"}) == (
        "TEMPCTL_MIN_FREQUENCY=450 (environment): must be <= SECOND_FREQUENCY=400 (default)"
    )
    assert load(absent, env={"TEMPCTL_MIN_FREQUENCY": "400"}).min_frequency == 400
    assert load(absent, env={"TEMPCTL_MIN_FREQUENCY": "0"}).min_frequency == 0  # auto


@pytest.mark.parametrize(
    "env,warning",
    [
        (
            {"STABLE_TIMEFRAME": "48"},
            "STABLE_TIMEFRAME=48 (environment): more than a day: the "
            "value is in hours, not seconds",
        ),
        ({"CHECK_INTERVAL": "300"}, "CHECK_INTERVAL=300 (environment): polls more than 2 min"),
        (
            {"MAX_FREQUENCY": "700", "FIRST_FREQUENCY": "490"},
            "MAX_FREQUENCY=700 (environment): above 625 MHz",
        ),
        ({"TEMPCTL_VR_THRESHOLD": "100"}, "TEMPCTL_VR_THRESHOLD=100 (environment): above 95 °C"),
        ({"TEMPCTL_STEP": "2"}, "TEMPCTL_STEP=2 (environment): below 5 MHz"),
    ],
)
def test_unusual_values_load_with_a_warning(absent, env, warning):
    s = load(absent, env=env)
    if "hours" in warning or "more than a day" in warning:
        assert "hours, not seconds" in s.warnings[0]
    assert any(w.startswith(warning) for w in s.warnings), s.warnings


def test_usual_values_give_no_warning(absent):
    assert load(absent, env={"STABLE_TIMEFRAME": "12", "CHECK_INTERVAL": "30"}).warnings == ()


def test_critical_floor_is_a_deprecated_alias_of_min_frequency(absent, toml_file):
    s = load(absent, env={"TEMPCTL_CRITICAL_FLOOR": "300"})
    assert (s.min_frequency, s.critical_floor) == (300, 300)
    assert s.warnings == (
        "TEMPCTL_CRITICAL_FLOOR (environment) is deprecated: use TEMPCTL_MIN_FREQUENCY instead",
    )
    both = load(absent, env={"TEMPCTL_CRITICAL_FLOOR": "300", "TEMPCTL_MIN_FREQUENCY": "250"})
    assert (both.min_frequency, both.critical_floor) == (250, 250)  # the new name wins
    assert "TEMPCTL_MIN_FREQUENCY is set too and wins" in both.warnings[0]
    plain = load(absent, env={"TEMPCTL_MIN_FREQUENCY": "250"})
    assert (plain.min_frequency, plain.critical_floor, plain.warnings) == (250, 250, ())
    path = toml_file(
        'bitaxe_ip = "10.0.0.5"\n[[devices]]\nurl = "10.0.0.7"\ncritical_floor = 320\n'.replace(
            'bitaxe_ip = "10.0.0.5"\n', ""
        )
    )
    s = load(absent, config_path=path)
    dev = s.for_device(s.devices[0])
    assert (dev.min_frequency, dev.critical_floor) == (320, 320)
    assert any("devices[0].critical_floor" in w and "deprecated" in w for w in s.warnings)
