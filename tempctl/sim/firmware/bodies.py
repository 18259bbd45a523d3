"""Info body templates: the generation's example body (tempctl/data/bodies) made into one device.

The example files stay byte-identical to shared/reference/system-info-examples; what
belongs to another board (chip, core count, the worker name in the pool user) is
rewritten here instead.
"""

from __future__ import annotations

import json
import random
import re

from tempctl.resources import PACKAGE_DIR
from tempctl.sim.firmware.boards import Board
from tempctl.sim.firmware.versions import GEN_START, KEY_SINCE, KEY_UNTIL, TEMPLATES, Version

__all__ = ["BODIES_DIR", "POOL_USER_KEYS", "load_template", "mac_from_seed", "make_template"]

BODIES_DIR = PACKAGE_DIR / "data" / "bodies"
# Keys whose value is "<address>.<worker>": the examples name the worker after the board.
POOL_USER_KEYS = ("stratumUser", "fallbackStratumUser")
_WORKER = re.compile(r"\.[A-Za-z0-9_-]+$")


def load_template(version: Version) -> dict:
    """The generation's example body, trimmed to the keys ``version`` has."""
    gen = max(i for i, start in enumerate(GEN_START) if version >= start)
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


def mac_from_seed(seed: int) -> str:
    rng = random.Random(f"mac:{seed}")
    # Espressif OUI D8:3B:DA as in the examples; the rest from the seed.
    return "D8:3B:DA:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(3))


def _worker(user: object, board: Board) -> object:
    if not isinstance(user, str):
        return user
    return _WORKER.sub("." + board.device_model.lower(), user)


def make_template(
    version: Version, board: Board, *, version_text: str, hostname: str, mac: str
) -> dict:
    """The info body of this board at this version, before any live value is filled in."""
    body = load_template(version)
    b = board
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
        # e.g. a Gamma built from the v2.13.2 Hex example must not mine as "....wlh.hex"
        for key in POOL_USER_KEYS:
            if key in body:
                body[key] = _worker(body[key], b)
        for pool in body.get("pools", []):
            pool["stratumUser"] = _worker(pool.get("stratumUser"), b)
    if "hostname" in body:
        body["hostname"] = hostname
    if "macAddr" in body:
        body["macAddr"] = mac
    if "version" in body:
        body["version"] = version_text
    if "axeOSVersion" in body:
        body["axeOSVersion"] = "Unified" if version >= (2, 15, 0) else version_text
    return body
