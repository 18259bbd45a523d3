"""A Bitaxe's firmware (AxeOS / ESP-Miner) as a pure, time-driven model.

No HTTP, no wall clock, no threads: ``Firmware.advance(t)`` moves device time,
``info()``/``patch()``/``restart()`` answer as the given firmware generation
would. ``tempctl.sim.emulator`` puts HTTP around it; the thermal physics is
``tempctl.sim.plant``. Every behaviour cites the team's reference
(shared/reference/axeos-api.md, "§n" below), which was read out of
bitaxeorg/ESP-Miner.

Simplifications (documented, not hidden):
* Versions between the five template generations use the nearest older
  template (tempctl/data/bodies) minus keys that are newer than the version.
* Pools, WiFi, shares and best-difficulty stay at template values (shares
  only count up).
* The BM1397 thermal derating of v2.0–v2.1.8 is not modelled (§9.1).
"""

from __future__ import annotations

import copy
import json
import math
import random
import re
import struct
import zlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from tempctl.resources import PACKAGE_DIR
from tempctl.sim.plant import Plant, PlantParams, params_for

if TYPE_CHECKING:  # only the Scenario interface is used (fields + ambient(t))
    from tempctl.sim.scenario import Scenario

BODIES_DIR = PACKAGE_DIR / "data" / "bodies"

Version = tuple[int, int, int]

# --- timing constants (axeos-api.md) -------------------------------------------------------------
RAMP_STEP_MHZ = 6.25  # §5.3: frequency_transition_bmXX.c steps 6.25 MHz ...
RAMP_STEP_S = 0.1  # ... every 100 ms
BOOT_MHZ = 50.0  # §6: cold-boot ramp starts at 50 MHz; §9.3: 50 MHz while stopped
RESTART_REPLY_S = 1.0  # §6: handler waits 1 s after replying, then esp_restart()
COOLDOWN_MIN_CHECKS = 6  # §9.2: at least 6 x 5 s = 30 s
COOLDOWN_CHECK_S = 5.0
COOLDOWN_VR_C = 95.0  # §9.2: longer while vrTemp > 95
COOLDOWN_INTERNAL_TEMP_C = 45.0  # §9.2: v2.11-v2.13 internal-sensor boards also wait for temp <= 45
PENALTY_MHZ = 100.0  # §9.2 step 4
PENALTY_MV = 100
RESUME_S = 3.0  # §3: resume re-init takes about 3 s
PAUSE_FAN_PCT = 30.0  # §3 / §9.4
PATCH_MAX_BYTES = 10240  # §2: a body of >= 10240 bytes gets 500 "content too long"

# Sub-stepping: fine steps keep PID/trip timing right; coarse steps make hour jumps cheap once the
# device sits at equilibrium (the plant's discretisation is exact, so only the fan loop needs care).
FINE_S = 0.5
COARSE_S = 10.0
FAN_QUANTUM_PCT = 0.25  # duty steps fed to the plant: the PWM register is coarse anyway, and it
# keeps the plant's cached transition matrices hot (a cache miss costs ~1 ms)
INITIAL_UPTIME_S = 3600.0  # a fresh emulator has been mining for an hour

MINING, DOWN, BOOTING, COOLDOWN, PAUSED = "mining", "down", "booting", "cooldown", "paused"

RESET_POWER_ON = "Reset due to power-on event"
RESET_SOFTWARE = "Software reset via esp_restart"
RESET_PANIC = "Software reset due to exception/panic"
RESTART_TEXT = "System will restart shortly."


def parse_version(text: str) -> Version:
    """``"v2.13.0-12-gabc"`` -> (2, 13, 0). ValueError for anything else."""
    m = re.match(r"^v?(\d+)\.(\d+)\.(\d+)", text.strip())
    if not m:
        raise ValueError(f"not a firmware version: {text!r} (expected e.g. v2.15.0)")
    return int(m[1]), int(m[2]), int(m[3])


# --- boards (§10) and ASIC options (§7) -----------------------------------------------------------


@dataclass(frozen=True)
class Board:
    device_model: str
    board_version: str
    asic: str
    chips: int
    small_cores: int
    default_mhz: float
    default_mv: int
    max_power: int
    nominal_v: int
    tps546: bool  # has vrTemp; `current` is the core-regulator output current
    internal_sensor: bool  # EMC2101 internal: reads the board, stays valid with the ASIC off
    two_sensors: bool  # temp2 is a real second sensor
    fans: int
    vcore_mv: tuple[int, int]  # per-ASIC window the regulator accepts (§10)
    swarm_color: str  # (estimate) colour names as in device_config.h, not verified per board


BOARDS = {
    ("BM1397", 1): Board(
        "Max", "102", "BM1397", 1, 672, 425, 1400, 25, 5, False, False, False, 1, (46, 2390), "red"
    ),
    ("BM1366", 1): Board(
        "Ultra",
        "204",
        "BM1366",
        1,
        894,
        485,
        1200,
        25,
        5,
        False,
        True,
        False,
        1,
        (46, 2390),
        "purple",
    ),
    ("BM1368", 1): Board(
        "Supra",
        "401",
        "BM1368",
        1,
        1276,
        490,
        1166,
        40,
        5,
        False,
        True,
        False,
        1,
        (46, 2390),
        "blue",
    ),
    ("BM1370", 1): Board(
        "Gamma",
        "601",
        "BM1370",
        1,
        2040,
        525,
        1150,
        40,
        5,
        True,
        False,
        False,
        1,
        (1000, 2000),
        "green",
    ),
    ("BM1366", 6): Board(
        "Hex",
        "302",
        "BM1366",
        6,
        894,
        485,
        1200,
        90,
        12,
        True,
        False,
        True,
        2,
        (833, 1500),
        "orange",
    ),
}
# Board names accepted for ``asic`` besides the chip names the plant knows.
ASIC_ALIASES = {
    "GAMMA": "BM1370",
    "SUPRA": "BM1368",
    "ULTRA": "BM1366",
    "MAX": "BM1397",
    "HEX": "HEX",
    "6XBM1366": "HEX",
    "BM1366X6": "HEX",
}


def plant_params(asic: str) -> PlantParams:
    """Plant constants for a chip name (BM1370 ...) or board name (gamma, hex ...)."""
    name = ASIC_ALIASES.get(asic.upper(), asic)
    if name != "HEX":
        return params_for(name)
    # The plant only knows single-chip boards. (estimate) A Hex scaled so that the v2.13.2 example
    # operating point (485 MHz / 1200 mV: 41.6 W reported with the 12 W offset, temp ~61.5 °C at
    # ~44 % fan) comes out near 28 °C ambient; TMP1075 sensors read in 0.0625 °C steps (§10).
    return replace(
        params_for("BM1366"),
        chips=6,
        p0_w=12.0,
        power_offset_w=12.0,
        k_w=0.0424,
        r_c_per_w_fixed=0.6,
        case_offset_c=4.0,
        temp_step_c=0.0625,
        vr_c_per_w=0.6,
        vr_offset_c=8.0,
    )


# §7 (device_config.h, unchanged since v2.8.0): (frequencyOptions, voltageOptions)
ASIC_OPTIONS = {
    "BM1397": (
        [400, 425, 450, 475, 485, 500, 525, 550, 575, 600],
        [1100, 1150, 1200, 1250, 1300, 1350, 1400, 1450, 1500],
    ),
    "BM1366": ([400, 425, 450, 475, 485, 500, 525, 550, 575], [1100, 1150, 1200, 1250, 1300]),
    "BM1368": (
        [400, 425, 450, 475, 485, 490, 500, 525, 550, 575],
        [1100, 1150, 1166, 1200, 1250, 1300],
    ),
    "BM1370": ([400, 490, 525, 550, 600, 625], [1000, 1060, 1100, 1150, 1200, 1250]),
}

# Template per generation (§1); a version uses the newest template not newer than itself.
TEMPLATES: list[tuple[Version, str]] = [
    ((2, 1, 10), "v2.1.10_ultra-204_BM1366.json"),
    ((2, 4, 5), "v2.4.5_supra-401_BM1368.json"),
    ((2, 10, 1), "v2.10.1_gamma-601_BM1370.json"),
    ((2, 13, 2), "v2.13.2_hex-302_6xBM1366.json"),
    ((2, 15, 0), "v2.15.0_gamma-602_BM1370.json"),
]
_GEN_START = [(0, 0, 0), (2, 4, 0), (2, 6, 0), (2, 11, 0), (2, 14, 0)]  # §1 generation boundaries

# First release with a key (§4.1/§4.2); the template of the generation is trimmed to the version.
KEY_SINCE: dict[str, Version] = {
    "vrTemp": (2, 1, 9),
    "fanrpm": (2, 1, 9),
    "asicCount": (2, 1, 9),
    "smallCoreCount": (2, 1, 9),
    "overheat_mode": (2, 1, 10),
    "macAddr": (2, 3, 0),
    "stratumDiff": (2, 4, 1),
    "idfVersion": (2, 4, 3),
    "wifiRSSI": (2, 6, 0),
    "maxPower": (2, 6, 0),
    "nominalVoltage": (2, 6, 0),
    "sharesRejectedReasons": (2, 6, 0),
    "temptarget": (2, 7, 0),
    "displayTimeout": (2, 7, 0),
    "expectedHashrate": (2, 8, 0),
    "display": (2, 8, 0),
    "poolDifficulty": (2, 9, 0),
    "responseTime": (2, 9, 0),
    "axeOSVersion": (2, 9, 0),
    "statsFrequency": (2, 9, 0),
    "rotation": (2, 9, 0),
    "temp2": (2, 10, 0),
    "minFanSpeed": (2, 10, 0),
    "hashRate_1m": (2, 12, 0),
    "hashRate_10m": (2, 12, 0),
    "hashRate_1h": (2, 12, 0),
    "resetReason": (2, 12, 0),
    "poolConnectionInfo": (2, 13, 0),
    "showNewBlock": (2, 13, 0),
    "coinbaseOutputs": (2, 13, 0),
    "coinbaseValueTotalSatoshis": (2, 13, 0),
    "coinbaseValueUserSatoshis": (2, 13, 0),
    "sharesPending": (2, 15, 0),
    "workReceived": (2, 15, 0),
    "minFreeHeap": (2, 15, 0),
    "maxAllocHeap": (2, 15, 0),
    "totalUptimeSeconds": (2, 15, 0),
    "totalHashes": (2, 15, 0),
    "totalLog2Work": (2, 15, 0),
    "pools": (2, 15, 0),
    "primaryPoolIndex": (2, 15, 0),
    "secondaryPoolIndex": (2, 15, 0),
    "partitions": (2, 15, 0),
    "fullHostname": (2, 15, 0),
    "mdnsHostname": (2, 15, 0),
}
KEY_UNTIL: dict[str, Version] = {  # first release WITHOUT the key
    "asicCount": (2, 9, 0),
    "stratumDiff": (2, 9, 0),
    "flipscreen": (2, 9, 0),
    "invertfanpolarity": (2, 7, 0),
}

# --- cJSON number and layout emulation (§2 "JSON formatting", "Numbers") ------------------------


def f32(x: float) -> float:
    """The double a C ``float`` becomes when cJSON prints it (the binary tail)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return x


def round7(x: float) -> float:
    """v2.12+: cjson_utils.c rounds float telemetry to 7 decimal places."""
    return round(f32(x), 7)


def _number(x: float) -> str:
    # cJSON print_number: integral values that fit an int print as %d; otherwise %1.15g, or
    # %1.17g when 15 digits do not round-trip. NaN/inf print as null.
    if isinstance(x, float) and not math.isfinite(x):
        return "null"
    if float(x).is_integer() and -(2**31) <= x < 2**31:
        return str(int(x))
    text = format(x, ".15g")  # C's %1.15g
    if float(text) != float(x):
        text = format(x, ".17g")
    return text


def dumps(obj: object, *, pretty: bool) -> str:
    """Serialise like cJSON: TAB pretty-print (<= v2.13) or compact (v2.14+)."""
    parts: list[str] = []
    _emit(obj, parts, 0, pretty)
    return "".join(parts)


def _emit(obj: object, out: list[str], depth: int, pretty: bool) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, (int, float)):
        out.append(_number(obj))
    elif isinstance(obj, str):
        out.append(json.dumps(obj, ensure_ascii=False))
    elif isinstance(obj, dict):
        depth += 1
        out.append("{\n" if pretty else "{")
        items = list(obj.items())
        for i, (key, value) in enumerate(items):
            if pretty:
                out.append("\t" * depth)
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":\t" if pretty else ":")
            _emit(value, out, depth, pretty)
            if i < len(items) - 1:
                out.append(",")
            if pretty:
                out.append("\n")
        if pretty:
            out.append("\t" * (depth - 1))
        out.append("}")
    elif isinstance(obj, (list, tuple)):
        depth += 1  # cJSON's print_array also bumps the depth
        out.append("[")
        for i, value in enumerate(obj):
            if i:
                out.append(", " if pretty else ",")
            _emit(value, out, depth, pretty)
        out.append("]")
    else:
        raise TypeError(f"cannot serialise {type(obj).__name__}")


def load_template(version: Version) -> dict:
    """The generation's example body, trimmed to the keys ``version`` has."""
    gen = max(i for i, start in enumerate(_GEN_START) if version >= start)
    body = json.loads((BODIES_DIR / TEMPLATES[gen][1]).read_text())
    for key in list(body):
        if (key in KEY_SINCE and version < KEY_SINCE[key]) or (
            key in KEY_UNTIL and version >= KEY_UNTIL[key]
        ):
            del body[key]
    if (2, 1, 9) <= version < (2, 1, 10):
        body["overheat"] = 0  # §4.2: renamed overheat_mode in v2.1.10
    if version < (2, 1, 9) and "fanrpm" not in body:
        # §4.2: before v2.1.9 the tach was fanSpeed (<= v2.1.3) / fanSpeedRpm; fanspeed = setting.
        body["fanSpeed" if version < (2, 1, 4) else "fanSpeedRpm"] = 0
    return body


_M64 = (1 << 64) - 1


def _mix(x: int) -> int:
    """splitmix64: a cheap, well-spread integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _unit(seed: int, key: str, k: int) -> float:
    """Deterministic value in [-1, 1) for (seed, key, k), independent of any call order."""
    return _mix(_mix(_mix(seed & _M64) ^ zlib.crc32(key.encode())) ^ (k & _M64)) / 2.0**63 - 1.0


def _smooth_noise(seed: int, key: str, t: float, period: float) -> float:
    """Deterministic noise in [-1, 1], linear between knots every ``period`` s.

    A function of time, not of a running RNG, so it does not depend on how often anyone asked.
    """
    k = math.floor(t / period)
    frac = t / period - k
    a, b = _unit(seed, key, k), _unit(seed, key, k + 1)
    return a + (b - a) * frac


def _step_noise(seed: int, key: str, t: float, period: float) -> float:
    return _unit(seed, key, math.floor(t / period))


def _quantize(x: float, step: float) -> float:
    return round(x / step) * step


# --- fan control (§9.4) ---------------------------------------------------------------------------


class FanPID:
    """The firmware's fan PID on ``temp`` (reverse-acting: hotter -> more fan).

    Arduino-PID shape as in ESP-Miner: P on error, I clamped to the output limits, D on the
    measurement. Gains are per second, so the emulator may run it at its own sub-step.
    """

    def __init__(self, kp: float, ki: float, kd: float, ema_alpha_100ms: float | None = None):
        self.kp, self.ki, self.kd = kp, ki, kd
        self.ema_alpha = ema_alpha_100ms
        self.integral = 50.0
        self._last: float | None = None
        self._filtered: float | None = None

    def reset(self, output: float, temp: float | None = None) -> None:
        self.integral = output
        self._last = self._filtered = temp

    def update(self, temp: float, target: float, dt: float, lo: float, hi: float) -> float:
        if self.ema_alpha is not None:
            if self._filtered is None:
                self._filtered = temp
            # v2.14+: EMA with alpha 0.2 per 100 ms sample, rescaled to this step length.
            alpha = 1.0 - (1.0 - self.ema_alpha) ** (dt / 0.1)
            self._filtered += alpha * (temp - self._filtered)
            temp = self._filtered
        err = temp - target
        self.integral = min(hi, max(lo, self.integral + self.ki * err * dt))
        deriv = (temp - self._last) / dt if self._last is not None and dt > 0 else 0.0
        self._last = temp
        return min(hi, max(lo, self.kp * err + self.integral + self.kd * deriv))


def pid_for(v: Version) -> FanPID:
    # §9.4 gains: P4/I0.2/D3 (v2.7), P15/I0.2/D3 (v2.8-v2.12), P3/I0.1/D1 (v2.13),
    # P5/I0.1/D2 with EMA 0.2 on max(temp, temp2) (v2.14+)
    if v >= (2, 14, 0):
        return FanPID(5.0, 0.1, 2.0, ema_alpha_100ms=0.2)
    if v >= (2, 13, 0):
        return FanPID(3.0, 0.1, 1.0)
    if v >= (2, 8, 0):
        return FanPID(15.0, 0.2, 3.0)
    return FanPID(4.0, 0.2, 3.0)


def linear_fan(v: Version, temp: float) -> float:
    """<= v2.6 auto-fan curve (§9.4)."""
    lo_pct, lo_c = (20.0, 50.0) if v < (2, 2, 0) else (35.0, 45.0)
    if temp <= lo_c:
        return lo_pct
    return min(100.0, lo_pct + (100.0 - lo_pct) * (temp - lo_c) / (75.0 - lo_c))


# --- frequency ramp (§5.3) ------------------------------------------------------------------------


@dataclass
class Ramp:
    start: float
    target: float
    t0: float

    @property
    def steps(self) -> int:
        return math.ceil(abs(self.target - self.start) / RAMP_STEP_MHZ - 1e-9)

    @property
    def end(self) -> float:
        return self.t0 + self.steps * RAMP_STEP_S

    def value(self, t: float) -> float:
        k = math.floor((t - self.t0) / RAMP_STEP_S + 1e-9)
        if k >= self.steps:
            return self.target
        if k <= 0:
            return self.start
        delta = min(k * RAMP_STEP_MHZ, abs(self.target - self.start))
        return self.start + math.copysign(delta, self.target - self.start)

    def next_step_time(self, t: float) -> float:
        k = math.floor((t - self.t0) / RAMP_STEP_S + 1e-9) + 1
        return self.t0 + k * RAMP_STEP_S


# --- PATCH validation table for v2.11+ (§5.1, main/nvs_config.c) --------------------------------

_NUM, _INT, _BOOL, _STR = "num", "int", "bool", "str"
# key: (type, lo, hi)  for strings lo/hi are lengths
PATCH_TABLE: dict[str, tuple[str, float, float]] = {
    "frequency": (_NUM, 1, 65535),
    "coreVoltage": (_INT, 1, 65535),
    "autofanspeed": (_BOOL, 0, 1),
    "manualFanSpeed": (_INT, 0, 100),
    "minFanSpeed": (_INT, 0, 99),
    "temptarget": (_INT, 35, 66),
    "overheat_mode": (_BOOL, 0, 0),
    "overclockEnabled": (_BOOL, 0, 1),
    "statsFrequency": (_INT, 0, 65535),
    "displayTimeout": (_INT, -1, 65535),
    "rotation": (_INT, 0, 270),
    "invertscreen": (_BOOL, 0, 1),
    "displayOffset": (_INT, 0, 65535),
    "display": (_STR, 0, 32),
    "hostname": (_STR, 1, 32),
    "ssid": (_STR, 1, 32),
    "wifiPass": (_STR, 0, 63),
    "useFallbackStratum": (_BOOL, 0, 1),
}
PATCH_TABLE_LEGACY_STRATUM: dict[str, tuple[str, float, float]] = {  # accepted up to v2.14.x
    "stratumURL": (_STR, 0, 128),
    "stratumUser": (_STR, 0, 128),
    "stratumPassword": (_STR, 0, 64),
    "stratumPort": (_INT, 1, 65535),
    "stratumSuggestedDifficulty": (_INT, 0, 2**32 - 1),
    "stratumExtranonceSubscribe": (_BOOL, 0, 1),
    "stratumTLS": (_INT, 0, 2),
    "stratumCert": (_STR, 0, 8192),
    "stratumDecodeCoinbase": (_BOOL, 0, 1),
    "fallbackStratumURL": (_STR, 0, 128),
    "fallbackStratumUser": (_STR, 0, 128),
    "fallbackStratumPassword": (_STR, 0, 64),
    "fallbackStratumPort": (_INT, 1, 65535),
    "fallbackStratumSuggestedDifficulty": (_INT, 0, 2**32 - 1),
    "fallbackStratumExtranonceSubscribe": (_BOOL, 0, 1),
    "fallbackStratumTLS": (_INT, 0, 2),
    "fallbackStratumCert": (_STR, 0, 8192),
    "fallbackStratumDecodeCoinbase": (_BOOL, 0, 1),
}
PATCH_TABLE_V215: dict[str, tuple[str, float, float]] = {
    "primaryPoolIndex": (_INT, 0, 7),
    "secondaryPoolIndex": (_INT, 0, 7),
    "useCustomWWW": (_BOOL, 0, 1),
}
# v2.0.0-v2.0.3 PATCH reads all of these and crashes on a missing one (§5.2)
V200_REQUIRED = (
    "stratumURL",
    "stratumUser",
    "stratumPort",
    "ssid",
    "wifiPass",
    "coreVoltage",
    "frequency",
    "flipscreen",
    "invertscreen",
)


class _BadInput(Exception):
    pass


def _check_value(kind: str, lo: float, hi: float, value: object) -> object:
    if kind == _STR:
        if not isinstance(value, str) or not lo <= len(value) <= hi:
            raise _BadInput
        return value
    if kind == _BOOL and isinstance(value, bool):
        number: float = int(value)
    elif isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _BadInput  # numbers inside strings ("500") are rejected too
    else:
        number = value
    if not math.isfinite(number) or not lo <= number <= hi:
        raise _BadInput
    if kind == _NUM:
        return float(number)
    return int(number)


def _json_loads(raw: bytes) -> object:
    def no_constants(name: str) -> float:
        raise ValueError(name)  # cJSON has no NaN/Infinity

    return json.loads(raw.decode("utf-8"), parse_constant=no_constants)


# --- the device -----------------------------------------------------------------------------------


@dataclass
class Sample:
    """What the power-management loop last measured (§4.3: telemetry is sample-and-hold)."""

    temp: float = -1.0
    temp2: float = -1.0
    vr: float = 0.0
    power: float = 0.0
    voltage_mv: float = 0.0
    current_ma: float = 0.0
    core_mv: float = 0.0


class Firmware:
    """One emulated Bitaxe. Deterministic: same seed + same call sequence -> same bodies."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        firmware: str | None = None,
        asic: str | None = None,
        seed: int = 0,
        ambient_offset_c: float = 0.0,
        start_s: float = 0.0,
        restart_downtime_s: float = 7.0,
        boot_s: float = 8.0,
        hostname: str = "bitaxe",
        mac: str | None = None,
    ):
        self.scenario = scenario
        version_text = firmware or scenario.firmware
        self.v = parse_version(version_text)
        self.version = version_text if version_text.startswith("v") else "v" + version_text
        self.params = plant_params(asic or scenario.asic)
        key = (self.params.asic, self.params.chips)
        if key not in BOARDS:
            raise ValueError(f"no board for {self.params.chips} x {self.params.asic}")
        self.board = BOARDS[key]
        self.seed = seed
        self.ambient_offset_c = ambient_offset_c
        self.ambient_shift_c = 0.0  # changed at run time through the emulator's control API
        self.restart_downtime_s = restart_downtime_s
        self.boot_s = boot_s
        self.template = self._make_template(hostname, mac)
        self.pretty = self.v < (2, 14, 0)  # §2: compact JSON from v2.14

        # NVS settings (§4.1 "cfg")
        self.nvs_mhz = float(scenario.frequency_mhz)
        self.nvs_mv = int(scenario.core_voltage_mv)
        self.autofan = scenario.fan_mode == "auto"
        self.manual_fan = float(scenario.fan_pct) if not self.autofan else 100.0
        self.min_fan = float(scenario.fan_pct) if self.autofan else 25.0
        self.temptarget = float(scenario.temptarget_c)
        self.overheat_mode = 0
        self.stats_frequency = 0
        self.hostname = hostname
        self.extra_settings: dict[str, object] = {}

        # live state: mining for INITIAL_UPTIME_S already, plant and fan at equilibrium
        self.t = float(start_s)
        self.phase = MINING
        self.actual_mhz = self.nvs_mhz  # PLL now
        self.target_mhz = self.nvs_mhz  # what the power loop last programmed
        self.applied_mv = self._regulator(self.nvs_mv, 0)
        self.boot_t = self.t - INITIAL_UPTIME_S
        self.reset_reason = RESET_POWER_ON
        self.restarts = 0
        self.patches = 0
        self.overheat_trips = 0
        self._ramp: Ramp | None = None
        self._after_ramp: str | None = None  # "off": Vcore off once a stop ramp reaches 50 MHz
        self._reboot_at: float | None = None
        self._reboot_reason = RESET_SOFTWARE
        self._up_at: float | None = None
        self._asic_at: float | None = None
        self._apply_at: float | None = None
        self._cool_check_at: float | None = None
        self._cool_checks = 0
        self._trip_setting: tuple[float, int] | None = None
        self._frozen_hashrate: float | None = None
        self._stats: list[tuple[float, dict[str, float]]] = []
        self._next_stat_at: float | None = None
        self._pid = pid_for(self.v)
        amb = self._ambient(self.t)
        self.plant = Plant(
            self.params,
            amb,
            seed=seed,
            freq_mhz=self.actual_mhz,
            core_mv=self.applied_mv,
            fan_pct=self.manual_fan,
        )
        self.fan_pct = self._initial_fan(amb)
        self.plant.settle(
            freq_mhz=self.actual_mhz,
            core_mv=self.applied_mv,
            fan_pct=self._plant_fan(),
            ambient_c=amb,
        )
        self._pid.reset(self.fan_pct, self.plant.die_c)
        expected = self._expected_true()
        self._hr_slow = expected
        # EMAs that started from 0 at boot (info() divides the start-up bias back out)
        self._hr_avg_age = INITIAL_UPTIME_S
        self._hr_avg = {
            tau: expected * (1.0 - math.exp(-INITIAL_UPTIME_S / tau))
            for tau in (60.0, 600.0, 3600.0)
        }
        self.shares = INITIAL_UPTIME_S * expected * 1e9 / (1000 * 2**32)
        self.sample = Sample()
        self._last_vr_refresh = self.t
        self._take_sample()

    def _initial_fan(self, amb: float) -> float:
        if not self.autofan:
            return self.manual_fan
        if self.v >= (2, 7, 0):
            return self._equilibrium_fan(amb)
        fan = 50.0  # <= v2.6 linear curve: iterate to its fixed point
        for _ in range(20):
            temp = self.plant.steady_die(self.actual_mhz, self.applied_mv, amb, fan)
            fan = float(round(linear_fan(self.v, temp)))
        return fan

    def _plant_fan(self) -> float:
        return round(self.fan_pct / FAN_QUANTUM_PCT) * FAN_QUANTUM_PCT

    # -- identity / template --------------------------------------------------------------------

    def _make_template(self, hostname: str, mac: str | None) -> dict:
        body = load_template(self.v)
        b = self.board
        same_board = (
            body.get("ASICModel") == b.asic
            and body.get("asicCount", b.chips) == b.chips
            and len(body.get("hashrateMonitor", {}).get("asics", [0] * b.chips)) == b.chips
        )
        if not same_board:
            overrides = {
                "ASICModel": b.asic,
                "boardVersion": b.board_version,
                "smallCoreCount": b.small_cores,
                "asicCount": b.chips,
                "maxPower": b.max_power,
                "nominalVoltage": b.nominal_v,
            }
            for k, val in overrides.items():
                if k in body:
                    body[k] = val
        if "hostname" in body:
            body["hostname"] = hostname
        if "macAddr" in body:
            body["macAddr"] = mac or self._mac_from_seed()
        if "version" in body:
            body["version"] = self.version
        if "axeOSVersion" in body:
            body["axeOSVersion"] = "Unified" if self.v >= (2, 15, 0) else self.version
        return body

    def _mac_from_seed(self) -> str:
        rng = random.Random(f"mac:{self.seed}")
        # Espressif OUI D8:3B:DA as in the examples; the rest from the seed.
        return "D8:3B:DA:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(3))

    # -- capabilities by version (§5.3, §9) --------------------------------------------------------

    @property
    def live_frequency(self) -> bool:
        """§5.3: can a new frequency be applied without a restart?"""
        if self.v < (2, 2, 0):
            return False
        if self.board.asic == "BM1397":
            return self.v >= (2, 12, 0)
        return True

    @property
    def loop_period_s(self) -> float:
        """§4.3: power-management loop period."""
        if self.v >= (2, 14, 0):
            return 0.1
        if self.v >= (2, 7, 0):
            return 1.8
        if self.v >= (2, 1, 0):
            return 2.0
        return 5.0

    @property
    def auto_recovery(self) -> bool:
        return self.v >= (2, 11, 0)  # §9.2

    # -- time ------------------------------------------------------------------------------------

    def _ambient(self, t: float) -> float:
        return self.scenario.ambient(max(0.0, t)) + self.ambient_offset_c + self.ambient_shift_c

    def ambient_c(self) -> float:
        return self._ambient(self.t)

    def advance(self, t_s: float) -> None:
        """Move device time forward to ``t_s`` (plant seconds); earlier times are ignored."""
        while self.t < t_s - 1e-9:
            self._substep(self._next_stop(t_s))

    def _events(self) -> list[float]:
        return [
            e
            for e in (
                self._reboot_at,
                self._up_at,
                self._asic_at,
                self._apply_at,
                self._cool_check_at,
            )
            if e is not None
        ]

    def _next_stop(self, t_end: float) -> float:
        """End of the next sub-step: on a fixed grid (so step lengths repeat and the plant's
        cache hits), never past an event, a ramp step or ``t_end``."""
        if self._ramp is not None:
            stop = self._ramp.next_step_time(self.t)
        else:
            grid = COARSE_S if self._quiescent() else FINE_S
            stop = (math.floor(self.t / grid + 1e-9) + 1) * grid
        for e in self._events():
            if e > self.t + 1e-9:
                stop = min(stop, e)
        return min(stop, t_end)

    def _quiescent(self) -> bool:
        """Nothing fast going on: the plant sits at equilibrium for the current fan duty."""
        if self.phase != MINING or self._ramp is not None:
            return False
        amb = self._ambient(self.t)
        steady = self.plant.steady_die(self.actual_mhz, self.applied_mv, amb, self._plant_fan())
        if abs(self.plant.die_c - steady) > 0.3 or steady > 73.0 or self.plant.vr_c > 100.0:
            return False  # moving, or settling close to a trip: keep the trip timing right
        if not self.autofan or self.v < (2, 7, 0):
            return True  # a fixed duty, or the <= v2.6 static curve
        err = self.plant.die_c - self.temptarget
        return (
            abs(err) < 0.3
            or (err > 0 and self.fan_pct >= 100.0)
            or (err < 0 and self.fan_pct <= self._min_fan())
        )

    def _substep(self, stop: float) -> None:
        dt = stop - self.t
        amb = self._ambient(self.t + dt / 2)
        running = self._hashing()
        if dt > FINE_S + 1e-9 and self.autofan and self.phase == MINING and self.v >= (2, 7, 0):
            # coarse step at equilibrium: the PID would sit at the duty that holds temptarget
            self.fan_pct = self._equilibrium_fan(amb)
            self._pid.reset(self.fan_pct, self.sample.temp)
        else:
            self.fan_pct = self._fan_duty(dt)
        self.plant.step(
            dt,
            freq_mhz=self.actual_mhz if running else 0.0,
            core_mv=self.applied_mv if running else 0,
            fan_pct=self._plant_fan(),
            ambient_c=amb,
            running=running,
        )
        self._account(dt, running)
        self.t = stop
        if self._ramp is not None:
            self.actual_mhz = self._ramp.value(self.t)
            if self.t >= self._ramp.end - 1e-9:
                self.actual_mhz = self._ramp.target
                self._ramp = None
                self._ramp_done()
        self._run_events()
        if self.t >= self._next_sample_at - 1e-9:
            self._take_sample()
        self._record_stats()

    def _hashing(self) -> bool:
        if self.phase == MINING:
            return True
        # v2.14+ overheat/pause: ramps to 50 MHz first, still hashing, then Vcore off (§9.2 step 2)
        return self.phase in (COOLDOWN, PAUSED) and self._ramp is not None

    def _account(self, dt: float, running: bool) -> None:
        true_hr = self._expected_true() if running else 0.0
        # <= v2.10: nonce-count estimate over ~2 min (§4.1 hashRate): a slow lag
        a = 1.0 - math.exp(-dt / 60.0)
        self._hr_slow += a * (true_hr - self._hr_slow)
        self._hr_avg_age += dt
        for tau in self._hr_avg:
            self._hr_avg[tau] += (1.0 - math.exp(-dt / tau)) * (true_hr - self._hr_avg[tau])
        # shares at pool difficulty 1000: GH/s * 1e9 / (1000 * 2^32) per second
        self.shares += true_hr * 1e9 / (1000 * 2**32) * dt

    def _expected_true(self) -> float:
        return (
            self.actual_mhz
            * self.board.small_cores
            * self.board.chips
            / 1000.0
            * self.params.hash_efficiency
        )

    # -- events ----------------------------------------------------------------------------------

    def _run_events(self) -> None:
        t = self.t + 1e-9
        if self._reboot_at is not None and t >= self._reboot_at:
            self._go_down(self._reboot_reason)
        if self._up_at is not None and t >= self._up_at:
            self._up_at = None
            self.phase = BOOTING
            self._asic_at = self.t + self.boot_s
        if self._asic_at is not None and t >= self._asic_at:
            self._asic_at = None
            self._asic_init()
        if self._apply_at is not None and t >= self._apply_at:
            self._apply_at = None
            self._pickup_settings()
        if self._cool_check_at is not None and t >= self._cool_check_at:
            self._cooldown_check()

    def _go_down(self, reason: str) -> None:
        self._reboot_at = None
        self._apply_at = self._asic_at = self._cool_check_at = None
        self._ramp = None
        self._after_ramp = None
        self.phase = DOWN
        self.restarts += 1
        self.reset_reason = reason
        self.boot_t = self.t
        self._up_at = self.t + self.restart_downtime_s
        self.actual_mhz = self.target_mhz = BOOT_MHZ  # PLL idles at 50 (§4.1 actualFrequency)
        self.sample = Sample(temp=-1.0, temp2=self._no_temp2(), core_mv=0.0)
        self._frozen_hashrate = None
        self._hr_slow = 0.0
        self._hr_avg = dict.fromkeys(self._hr_avg, 0.0)
        self._hr_avg_age = 0.0
        self.shares = 0.0
        self._stats.clear()
        self._next_stat_at = None
        if self._trip_setting is not None and self.auto_recovery:
            self._trip_setting = None  # a reboot ends the cool-down; NVS keeps overheat_mode

    def _asic_init(self) -> None:
        """ASIC up: read NVS, set the voltage, ramp from 50 MHz (§6)."""
        self.phase = MINING
        self.applied_mv = self._regulator(self.nvs_mv, self.applied_mv)
        self.actual_mhz = BOOT_MHZ
        self.target_mhz = self.nvs_mhz
        self._start_ramp(BOOT_MHZ, self.nvs_mhz)
        self._next_sample_at = self.t
        self._frozen_hashrate = None

    def _start_ramp(self, start: float, target: float) -> None:
        self._ramp = Ramp(start, target, self.t)
        if self._ramp.steps == 0:
            self._ramp = None
            self.actual_mhz = target
            self._ramp_done()

    def _ramp_done(self) -> None:
        if self._after_ramp == "off":
            self._after_ramp = None
            self.actual_mhz = BOOT_MHZ  # §4.1 actualFrequency: 50 while paused or stopped

    def _regulator(self, wanted_mv: int, current_mv: int) -> int:
        """§10: a setting outside the regulator window is stored but not applied."""
        lo, hi = self.board.vcore_mv
        return wanted_mv if lo <= wanted_mv <= hi else current_mv

    def _next_loop_tick(self) -> float:
        p = self.loop_period_s
        k = math.floor((self.t - self.boot_t) / p + 1e-9) + 1
        return self.boot_t + k * p

    def _schedule_pickup(self) -> None:
        if self.phase != MINING or not self.live_frequency:
            return  # restart-needed firmware reads NVS at the next boot
        at = self._next_loop_tick()
        if self._ramp is not None:
            at = max(at, self._ramp.end)  # the power loop is blocked during a ramp (§4.3)
        self._apply_at = at if self._apply_at is None else min(self._apply_at, at)

    def _pickup_settings(self) -> None:
        if self.phase != MINING:
            return
        if self._ramp is not None:  # a ramp started meanwhile (boot); try again after it
            self._apply_at = self._ramp.end
            return
        # §5.3: voltage in one step first, then the frequency ramp
        self.applied_mv = self._regulator(self.nvs_mv, self.applied_mv)
        if self.nvs_mhz != self.target_mhz:
            start = self.actual_mhz
            if (2, 2, 0) <= self.v < (2, 6, 0) and self.board.asic != "BM1368":
                start = 56.25  # §5.3: the shared BM1368 ramp starts from 56.25 MHz on other chips
            self.target_mhz = self.nvs_mhz
            self._start_ramp(start, self.nvs_mhz)

    # -- telemetry ---------------------------------------------------------------------------------

    def _no_temp2(self) -> float:
        return -1.0 if self.v >= (2, 11, 0) else 0.0  # §10: -1 (v2.11+), 0 in v2.10

    def _read_temps(self) -> tuple[float, float]:
        temp = self.plant.read_die()  # noisy and quantised to the sensor step by the plant
        if self.board.two_sensors:
            # (estimate) the second sensor sits ~2.7 °C cooler, as in the v2.13.2 Hex example
            offset = 2.7 + 0.3 * _step_noise(self.seed, "temp2", self.t, 30.0)
            temp2 = _quantize(temp - offset, self.params.temp_step_c)
        else:
            temp2 = self._no_temp2()
        return temp, temp2

    def _take_sample(self) -> None:
        self._next_sample_at = self._next_loop_tick()
        if self._ramp is not None and self.phase == MINING:
            return  # §4.3: the loop is blocked during a ramp; values freeze
        if self.phase == COOLDOWN:
            # §9.3: temp frozen (internal-sensor boards: -1 on v2.14+, board temp before);
            # vrTemp refreshed every 5 s.
            if self.board.internal_sensor:
                self.sample.temp = -1.0 if self.v >= (2, 14, 0) else self._read_temps()[0]
            if self.board.tps546 and self.t - self._last_vr_refresh >= COOLDOWN_CHECK_S - 1e-9:
                self.sample.vr = float(round(self.plant.read_vr()))
                self._last_vr_refresh = self.t
            self.sample.power, self.sample.current_ma, self.sample.core_mv = 0.0, 0.0, 0.0
            return
        s = self.sample
        valid = self.phase == MINING or (self.phase == PAUSED and self._ramp is not None)
        if valid:
            s.temp, s.temp2 = self._read_temps()
        elif self.phase in (BOOTING, PAUSED) and self.board.internal_sensor and self.v < (2, 6, 0):
            s.temp, s.temp2 = self._read_temps()  # §10: v2.2-v2.5 internal sensors always read
        else:
            s.temp, s.temp2 = -1.0, self._no_temp2()
        s.vr = float(round(self.plant.read_vr())) if self.board.tps546 else 0.0
        self._last_vr_refresh = self.t
        s.power = self.plant.power_w  # what AxeOS reports, incl. the TPS546 offset (§4.1)
        heat = max(0.0, s.power - self.params.power_offset_w)
        s.core_mv = self._core_actual(heat) if self._hashing() else 0.0
        # (estimate) input droop; quantised to the sensors' LSBs as seen in the examples
        if self.board.tps546:
            # `current` is the core-regulator output current (§4.1); Hex stacks 3 chips in series
            stack = 3 if self.board.chips >= 3 else 1
            s.voltage_mv = _quantize(self.board.nominal_v * 1000 + 90 - 0.6 * s.power, 3.125)
            s.current_ma = (
                _quantize(heat / max(stack * s.core_mv / 1000.0, 0.1) * 1000.0, 62.5)
                if s.core_mv > 0
                else 0.0
            )
        else:
            vin = self.board.nominal_v * 1000 + 70 - 2.0 * s.power  # INA260: input side
            s.voltage_mv = _quantize(vin, 1.25)
            s.current_ma = _quantize(s.power / (vin / 1000.0) * 1000.0, 1.25)
        self._check_trip()

    def _core_actual(self, heat_w: float) -> float:
        # §10: coreVoltageActual sags 10-40 mV below the setting under load (estimate ~1 mV/W/chip)
        sag = 0.9 * heat_w / self.board.chips + 2.0 * _step_noise(self.seed, "vsag", self.t, 5.0)
        return float(round(self.applied_mv - sag))

    def _check_trip(self) -> None:
        """§9.1: temp or temp2 > 75 °C (80 in v2.0.0), vrTemp > 105 °C (v2.2.0+)."""
        if self.phase != MINING:
            return
        limit = 80.0 if self.v < (2, 0, 1) else 75.0
        s = self.sample
        hot = s.temp > limit or (self.board.two_sensors and s.temp2 > limit)
        if self.v >= (2, 2, 0) and self.board.tps546 and s.vr > 105.0:
            hot = True
        if hot:
            self._trip()

    def force_overheat(self) -> bool:
        """Fault injection: the firmware trips now (as if the sensor said > 75 °C)."""
        if self.phase != MINING or self._reboot_at is not None:
            return False
        self._trip()
        return True

    def inject_temp(self, value: float) -> None:
        """Fault injection: the sensor reads ``value`` (until the next sample). The firmware
        trusts it, so 127 °C (EMC2101 diode open) trips the overheat protection (§10)."""
        if self.phase == MINING and self._ramp is None:
            self.sample.temp = value
            self._check_trip()

    def _trip(self) -> None:
        self.overheat_trips += 1
        if self.auto_recovery:
            # §9.2 v2.11+: record F/V, manual fan 100 (sticky), overheat_mode 1, stop, cool down
            self._trip_setting = (self.nvs_mhz, self.nvs_mv)
            self.autofan = False
            self.manual_fan = 100.0
            self.overheat_mode = 1
            self.phase = COOLDOWN
            self._apply_at = None
            self._frozen_hashrate = self._hashrate_value() if self.v < (2, 14, 0) else None
            if self.v >= (2, 14, 0):
                self._after_ramp = "off"
                self.target_mhz = BOOT_MHZ
                self._start_ramp(self.actual_mhz, BOOT_MHZ)
            else:
                self._ramp = None  # v2.11-v2.13 cut power at once
            self._cool_checks = 0
            self._cool_check_at = self.t + COOLDOWN_CHECK_S
            self._last_vr_refresh = self.t
        else:
            # §9.2 v2.1.9-v2.10 (and older): latched NVS writes, then exit() -> crash reboot
            self.nvs_mv = 1000 if self.v >= (2, 1, 9) else 990
            self.nvs_mhz = BOOT_MHZ
            self.manual_fan = 100.0
            self.autofan = False
            if self.v >= (2, 1, 9):
                self.overheat_mode = 1
            self.fan_pct = 100.0
            self._go_down(RESET_PANIC)

    def _cooldown_check(self) -> None:
        self._cool_checks += 1
        self._cool_check_at = self.t + COOLDOWN_CHECK_S
        if self._cool_checks < COOLDOWN_MIN_CHECKS:
            return
        if self.board.tps546 and self.plant.read_vr() > COOLDOWN_VR_C:
            return
        if (
            self.board.internal_sensor
            and self.v < (2, 14, 0)
            and self._read_temps()[0] > COOLDOWN_INTERNAL_TEMP_C
        ):
            return
        # step 4: write V-100 / F-100 (with the quirks), re-init live, clear overheat_mode
        f, v = self._trip_setting or (self.nvs_mhz, self.nvs_mv)
        self.nvs_mhz = f - PENALTY_MHZ if f - PENALTY_MHZ > 100 else 400.0
        self.nvs_mv = v - PENALTY_MV if v - PENALTY_MV > 100 else 1000
        self.overheat_mode = 0
        self._trip_setting = None
        self._cool_check_at = None
        self._after_ramp = None
        self._asic_init()

    # -- fan ---------------------------------------------------------------------------------------

    def _auto_fan_active(self) -> bool:
        return self.autofan and self.phase == MINING

    def _min_fan(self) -> float:
        if self.v >= (2, 10, 0):
            return self.min_fan
        return 15.0 if self.v < (2, 8, 0) else 25.0  # §9.4 fixed minimum before v2.10

    def _fan_duty(self, dt: float) -> float:
        if self.phase == DOWN:
            return self.fan_pct
        if self.phase == COOLDOWN:
            return 100.0
        if self.phase == PAUSED:
            return PAUSE_FAN_PCT
        if not self.autofan:
            return self.manual_fan
        s = self.sample
        temp = max(s.temp, s.temp2) if self.v >= (2, 14, 0) else s.temp
        invalid = temp <= 0 if self.v >= (2, 14, 0) else temp < 0
        if self.phase == BOOTING or invalid:
            return 100.0 if (2, 11, 0) <= self.v < (2, 13, 0) else 70.0  # §9.4 invalid temp
        if self.v < (2, 7, 0):
            return float(round(linear_fan(self.v, temp)))
        return self._pid.update(temp, self.temptarget, dt, self._min_fan(), 100.0)

    def _equilibrium_fan(self, amb: float) -> float:
        """Fan duty that holds ``temptarget`` at steady state (used for coarse steps only)."""
        lo, hi = self._min_fan(), 100.0

        def temp_at(fan: float) -> float:
            return self.plant.steady_die(self.actual_mhz, self.applied_mv, amb, fan)

        if temp_at(hi) >= self.temptarget:
            return hi
        if temp_at(lo) <= self.temptarget:
            return lo
        for _ in range(30):
            mid = (lo + hi) / 2
            if temp_at(mid) > self.temptarget:
                lo = mid
            else:
                hi = mid
            if hi - lo < 0.01:
                break
        return (lo + hi) / 2

    # -- reachability, restart, crash -------------------------------------------------------------

    def reachable(self) -> bool:
        """False while rebooting (the HTTP server is down: connection refused)."""
        return self.phase != DOWN

    def restart(self) -> tuple[int, str, bytes]:
        """POST /api/system/restart (§6). Status 0 = the connection drops without a reply."""
        if self._reboot_at is None:
            self._reboot_at = self.t + RESTART_REPLY_S
            self._reboot_reason = RESET_SOFTWARE
        if self.v <= (2, 1, 5):
            return 0, "", b""
        if self.v >= (2, 13, 0):
            reply = dumps({"message": RESTART_TEXT}, pretty=self.pretty)
            return 200, "application/json", reply.encode()
        ctype = "text/plain" if self.v >= (2, 12, 0) else "text/html"
        return 200, ctype, RESTART_TEXT.encode()

    def crash(self, reason: str = RESET_PANIC) -> None:
        """A spontaneous reboot (panic, brown-out): down now, back after the downtime."""
        if self.phase != DOWN:
            self._go_down(reason)

    # -- pause / resume (v2.14+, §3) ---------------------------------------------------------------

    def pause(self) -> bool:
        if self.v < (2, 14, 0) or self.phase != MINING:
            return False
        self.phase = PAUSED
        self._apply_at = None
        self._after_ramp = "off"
        self.target_mhz = BOOT_MHZ
        self._start_ramp(self.actual_mhz, BOOT_MHZ)
        return True

    def resume(self) -> bool:
        if self.v < (2, 14, 0) or self.phase != PAUSED:
            return False
        self.phase = BOOTING
        self._ramp = None
        self._after_ramp = None
        self._asic_at = self.t + RESUME_S
        return True

    # -- PATCH /api/system (§5) -------------------------------------------------------------------

    def patch(self, body: bytes) -> tuple[int, str, bytes]:
        """Apply a settings PATCH; (status, content type, body). Status 0 = connection dropped."""
        self.patches += 1
        if len(body) >= PATCH_MAX_BYTES:
            return 500, "text/html", b"content too long"
        try:
            data = _json_loads(body) if body else None
            parsed = body != b""
        except (ValueError, UnicodeDecodeError):
            data, parsed = None, False
        if not parsed:
            if self.v >= (2, 4, 0):
                return 400, "text/html", b"Invalid JSON"
            return 200, "text/html", b""  # §5.2: before v2.4.0 bad JSON is a silent 200
        if not isinstance(data, dict):
            return 200, "text/html", b""  # §5.2: a non-object is a 200 no-op
        if self.v < (2, 0, 4) and any(k not in data for k in V200_REQUIRED):
            self.crash(RESET_PANIC)  # §5.2: a partial body crashes v2.0.0-v2.0.3
            return 0, "", b""
        if self.v >= (2, 11, 0):
            return self._patch_validated(data)
        self._patch_legacy(data)
        return 200, "text/html", b""

    def _patch_table(self) -> dict[str, tuple[str, float, float]]:
        table = dict(PATCH_TABLE)
        if self.v < (2, 15, 0):
            table.update(PATCH_TABLE_LEGACY_STRATUM)
        else:
            table.update(PATCH_TABLE_V215)
        return table

    def _patch_validated(self, data: dict) -> tuple[int, str, bytes]:
        """v2.11+: table-driven, all-or-nothing; unknown keys are ignored (§5.2)."""
        table = self._patch_table()
        clean: dict[str, object] = {}
        try:
            for key, value in data.items():
                if key == "pools" and self.v >= (2, 15, 0):
                    if not isinstance(value, list) or not all(
                        isinstance(p, dict) and type(p.get("id")) is int and 0 <= p["id"] <= 7
                        for p in value
                    ):
                        raise _BadInput
                    continue
                if key not in table:
                    continue
                kind, lo, hi = table[key]
                clean[key] = _check_value(kind, lo, hi, value)
                if key == "rotation" and clean[key] not in (0, 90, 180, 270):
                    raise _BadInput
        except _BadInput:
            return 400, "text/html", b"Wrong API input"
        old_host = self.hostname
        self._store(clean)
        if self.v >= (2, 15, 0) and "hostname" in clean and clean["hostname"] != old_host:
            reply = {
                "status": "success",
                "redirect": {
                    "url": f"http://{self.hostname}.local",
                    "delay": 2000,
                    "message": "Hostname changed, redirecting...",
                },
            }
            return 200, "application/json", dumps(reply, pretty=False).encode()
        return 200, "text/html", b""

    def _patch_legacy(self, data: dict) -> None:
        """v2.0.4-v2.10: no type or range checks; cJSON valueint of a non-number is 0 (§5.2)."""

        def as_int(value: object) -> int:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return 0
            return int(max(-(2**31), min(2**31 - 1, value)))

        clean: dict[str, object] = {}
        for key in ("frequency", "coreVoltage"):
            if key in data:
                value = data[key]
                if key == "frequency" and self.v >= (2, 10, 0):
                    number: float = (
                        value
                        if isinstance(value, (int, float)) and not isinstance(value, bool)
                        else 0.0
                    )
                else:
                    number = as_int(value) % 65536  # u16 NVS entry wraps
                if self.v >= (2, 3, 0) and number <= 0:
                    continue  # §5.2: from v2.3.0 values <= 0 are ignored
                clean[key] = number
        for key in ("autofanspeed", "fanspeed", "temptarget", "minFanSpeed", "statsFrequency"):
            if key in data:
                clean[key] = as_int(data[key])
        if "overheat_mode" in data:
            clean["overheat_mode"] = 0  # §5.2: any value clears the flag
        if isinstance(data.get("hostname"), str):
            clean["hostname"] = data["hostname"]
        self._store(clean)

    def _store(self, clean: dict[str, object]) -> None:
        freq_or_mv = False
        for key, value in clean.items():
            if key == "frequency":
                self.nvs_mhz = float(value) if self.v >= (2, 10, 0) else float(int(value))
                freq_or_mv = True
            elif key == "coreVoltage":
                self.nvs_mv = int(value)
                freq_or_mv = True
            elif key == "autofanspeed":
                self.autofan = bool(value)
            elif key in ("manualFanSpeed", "fanspeed"):
                self.manual_fan = float(value)
            elif key == "minFanSpeed":
                self.min_fan = float(value)
            elif key == "temptarget":
                self.temptarget = float(value)
            elif key == "overheat_mode":
                self.overheat_mode = 0
            elif key == "statsFrequency":
                self.stats_frequency = int(value)
                self._next_stat_at = None
            elif key == "hostname":
                self.hostname = str(value)
            else:
                self.extra_settings[key] = value
        if freq_or_mv:
            self._schedule_pickup()

    # -- GET /api/system/info (§4) ----------------------------------------------------------------

    def _hashrate_value(self) -> float:
        if self.phase == COOLDOWN and self._frozen_hashrate is not None:
            return self._frozen_hashrate  # §9.3: may stay frozen on v2.11-v2.13
        if not self._hashing():
            return 0.0
        if self.v >= (2, 11, 0):
            # §4.1: ASIC hash counters polled at 1 Hz: smooth, +-1-3 %
            base = self.plant.hashrate(self.actual_mhz, True)
            return base * (1.0 + 0.01 * _step_noise(self.seed, "hr", self.t, 1.0))
        # <= v2.10: nonce-count estimate, slow and noisy (+-5-10 %)
        return self._hr_slow * (1.0 + 0.07 * _smooth_noise(self.seed, "hr", self.t, 30.0))

    def _expected_hashrate(self) -> float:
        if not self._hashing() or self.phase != MINING:
            return 0.0
        f = self.target_mhz if self.v >= (2, 11, 0) else self.nvs_mhz  # §4.1 expectedHashrate
        return f * self.board.small_cores * self.board.chips / 1000.0

    def _float(self, x: float) -> float:
        return round7(x) if self.v >= (2, 12, 0) else f32(x)

    def _fan_reported(self) -> float:
        if self.v < (2, 13, 0):
            return float(round(self.fan_pct))  # whole numbers before v2.13 (§4.1 fanspeed)
        if self.v >= (2, 14, 0):
            return f32(self.fan_pct)  # unrounded again in v2.14+ (§2)
        return round7(self.fan_pct)

    def info(self) -> dict:
        """The GET /api/system/info body for this generation (python dict)."""
        body = copy.deepcopy(self.template)
        s = self.sample
        hashrate = self._hashrate_value()
        fl = self._float
        uptime = int(self.t - self.boot_t)
        # §9.3: v2.14+ reads a RAM copy that a poller practically never sees at 1
        overheat_visible = self.overheat_mode if self.v < (2, 14, 0) else 0
        freq_setting: float = self.nvs_mhz if self.v >= (2, 10, 0) else int(self.nvs_mhz)
        values: dict[str, object] = {
            "power": fl(s.power),
            "voltage": fl(s.voltage_mv),
            "current": fl(s.current_ma),
            "temp": fl(s.temp),
            "temp2": fl(s.temp2),
            "vrTemp": s.vr,
            "coreVoltage": self.nvs_mv,
            "coreVoltageActual": s.core_mv,
            "frequency": freq_setting,
            "actualFrequency": fl(self.actual_mhz),
            "expectedHashrate": fl(self._expected_hashrate()),
            "hashRate": fl(hashrate) if self.v >= (2, 12, 0) else hashrate,
            "fanspeed": self._fan_reported(),
            "fanrpm": self.params.fan_rpm(self.fan_pct),
            "fan2rpm": max(0, self.params.fan_rpm(self.fan_pct) - 30) if self.board.fans > 1 else 0,
            "autofanspeed": int(self.autofan),
            "manualFanSpeed": int(self.manual_fan),
            "minFanSpeed": int(self.min_fan),
            "temptarget": int(self.temptarget),
            "overheat_mode": overheat_visible,
            "overheat": overheat_visible,
            "uptimeSeconds": uptime,
            "sharesAccepted": int(self.shares),
            "sharesRejected": int(self.shares / 1000),
            "statsFrequency": self.stats_frequency,
            "hostname": self.hostname,
            "miningPaused": self.phase == PAUSED,
            "resetReason": self.reset_reason,
            "fullHostname": f"{self.hostname}.local",
            "mdnsHostname": self.hostname,
        }
        if self.v < (2, 1, 9):
            values["fanspeed"] = int(self.manual_fan)  # §4.2: the manual setting back then
            values["fanSpeed"] = values["fanSpeedRpm"] = values["fanrpm"]
        values.update(self._hashrate_averages())
        for key, value in values.items():
            if key in body:
                body[key] = value
        if "hashrateMonitor" in body:
            if self._hashing() or (self.v < (2, 14, 0) and self.phase != DOWN):
                body["hashrateMonitor"] = self._hashrate_monitor(hashrate)
            else:
                del body["hashrateMonitor"]  # §4.1: omitted before ASIC init (v2.14+)
        return body

    def _hashrate_averages(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for tau, key in ((60.0, "hashRate_1m"), (600.0, "hashRate_10m"), (3600.0, "hashRate_1h")):
            # a rolling mean over whatever history exists since boot (0 before the first sample)
            warm = 1.0 - math.exp(-self._hr_avg_age / tau) if self._hr_avg_age > 0 else 0.0
            out[key] = self._float(self._hr_avg[tau] / warm) if warm > 1e-6 else 0
        return out

    def _hashrate_monitor(self, hashrate: float) -> dict:
        asics = []
        chips = self.board.chips
        for i in range(chips):
            noise = _step_noise(self.seed, f"chip{i}", self.t, 1.0)
            total = hashrate / chips * (1.0 + 0.01 * noise)
            domains = [
                self._float(
                    total / 4 * (1.0 + 0.01 * _step_noise(self.seed, f"dom{i}.{d}", self.t, 1.0))
                )
                for d in range(4)
            ]
            errors = int(self.shares * (0.05 + 0.01 * i))
            asics.append({"total": self._float(total), "errorCount": errors, "domains": domains})
        return {"asics": asics}

    def info_bytes(self, body: dict | None = None) -> bytes:
        return dumps(self.info() if body is None else body, pretty=self.pretty).encode()

    # -- GET /api/system/asic (§7) ----------------------------------------------------------------

    def asic(self) -> dict | None:
        if self.v < (2, 7, 0):
            return None
        b = self.board
        freqs, volts = ASIC_OPTIONS[b.asic]
        body: dict[str, object] = {"ASICModel": b.asic}
        if self.v >= (2, 9, 0):
            body.update(deviceModel=b.device_model, swarmColor=b.swarm_color, asicCount=b.chips)
        if self.v >= (2, 11, 0):
            body["hashDomains"] = 1 if b.asic == "BM1397" else 4
        if self.v >= (2, 8, 0):
            body["defaultFrequency"] = b.default_mhz
        body["frequencyOptions"] = freqs
        if self.v >= (2, 8, 0):
            body["defaultVoltage"] = b.default_mv
        body["voltageOptions"] = volts
        return body

    # -- GET /api/system/statistics (§8) ----------------------------------------------------------

    STAT_COLUMNS = (
        "hashrate",
        "hashrate_1m",
        "hashrate_10m",
        "hashrate_1h",
        "errorPercentage",
        "asicTemp",
        "asicTemp2",
        "vrTemp",
        "asicVoltage",
        "voltage",
        "power",
        "current",
        "fanSpeed",
        "fanRpm",
        "fan2Rpm",
        "wifiRssi",
        "freeHeap",
        "responseTime",
    )
    STAT_COLUMNS_OLD = (
        "hashrate",
        "asicTemp",
        "vrTemp",
        "asicVoltage",
        "voltage",
        "power",
        "current",
        "fanSpeed",
        "fanRpm",
        "wifiRssi",
        "freeHeap",
    )
    STATS_MAX = 720

    def _record_stats(self) -> None:
        if self.stats_frequency <= 0 or self.v < (2, 8, 0) or self.phase == DOWN:
            return
        if self._next_stat_at is None:
            self._next_stat_at = self.t + self.stats_frequency
            return
        if self.t < self._next_stat_at - 1e-9:
            return
        s, fl = self.sample, self._float
        avg = self._hashrate_averages()
        row = {
            "hashrate": fl(self._hashrate_value()),
            "hashrate_1m": avg["hashRate_1m"],
            "hashrate_10m": avg["hashRate_10m"],
            "hashrate_1h": avg["hashRate_1h"],
            "errorPercentage": self.template.get("errorPercentage", 0),
            "asicTemp": fl(s.temp),
            "asicTemp2": fl(s.temp2),
            "vrTemp": s.vr,
            "asicVoltage": s.core_mv,
            "voltage": fl(s.voltage_mv),
            "power": fl(s.power),
            "current": fl(s.current_ma),
            "fanSpeed": self._fan_reported(),
            "fanRpm": self.params.fan_rpm(self.fan_pct),
            "fan2Rpm": 0,
            "wifiRssi": self.template.get("wifiRSSI", -90),
            "freeHeap": self.template.get("freeHeap", 0),
            "responseTime": self.template.get("responseTime", 0),
        }
        # One row per sample time passed; a coarse step repeats its values (the device sat at
        # equilibrium), and a jump longer than the ring only keeps what fits.
        due = math.floor((self.t - self._next_stat_at) / self.stats_frequency + 1e-9) + 1
        first = self._next_stat_at + max(0, due - self.STATS_MAX) * self.stats_frequency
        for k in range(min(due, self.STATS_MAX)):
            self._stats.append((first + k * self.stats_frequency, row))
        del self._stats[: -self.STATS_MAX]
        self._next_stat_at += due * self.stats_frequency

    def statistics(self, columns: str | None = None) -> dict | None:
        """§8 body, or None when the firmware has no statistics endpoint (< v2.8)."""
        if self.v < (2, 8, 0):
            return None
        if self.v >= (2, 11, 0):
            labels = list(self.STAT_COLUMNS)
            if columns:
                wanted = {c.strip() for c in columns.split(",")}
                labels = [c for c in labels if c in wanted]
        else:
            labels = list(self.STAT_COLUMNS_OLD)
        labels.append("timestamp")
        rows = [
            [row[c] for c in labels[:-1]] + [int((t - self.boot_t) * 1000)]
            for t, row in self._stats
        ]
        return {
            "currentTimestamp": int((self.t - self.boot_t) * 1000),
            "labels": labels,
            "statistics": rows,
        }

    # -- for the emulator's control API and tests ------------------------------------------------

    def state(self) -> dict:
        return {
            "plant_time_s": self.t,
            "phase": self.phase,
            "reachable": self.reachable(),
            "die_c": self.plant.die_c,
            "vr_c": self.plant.vr_c,
            "power_w": self.plant.power_w,
            "ambient_c": self._ambient(self.t),
            "frequency_mhz": self.nvs_mhz,
            "actual_mhz": self.actual_mhz,
            "core_mv": self.nvs_mv,
            "applied_mv": self.applied_mv,
            "fan_pct": self.fan_pct,
            "autofan": self.autofan,
            "running": self._hashing(),
            "overheat_mode": self.overheat_mode,
            "restarts": self.restarts,
            "patches": self.patches,
            "overheat_trips": self.overheat_trips,
            "version": self.version,
            "asic": self.board.asic,
            "board": self.board.device_model,
        }
