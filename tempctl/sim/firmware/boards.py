"""Boards (axeos-api.md §10, main/device_config.h) and ASIC option lists (§7)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from tempctl.sim.plant import PlantParams, params_for

__all__ = ["ASIC_ALIASES", "ASIC_OPTIONS", "BOARDS", "Board", "plant_params"]


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
    # BM1372/BM1373 exist only on ESP-Miner master (§7 "HEAD only"; device_config.h there).
    # (estimate) The reference gives their defaults (327 MHz / 1000 mV) and option lists but
    # no board row: modelled as a single-chip TPS546 board like the Gamma (regulator window
    # 1000-2000 mV, main/power/vcore.c), 2040 small cores as the BM1370 whose options it shares.
    ("BM1372", 1): Board(
        "Gamma",
        "602",
        "BM1372",
        1,
        2040,
        327,
        1000,
        40,
        5,
        True,
        False,
        False,
        1,
        (1000, 2000),
        "green",
    ),
    ("BM1373", 1): Board(
        "Gamma",
        "602",
        "BM1373",
        1,
        2040,
        327,
        1000,
        40,
        5,
        True,
        False,
        False,
        1,
        (1000, 2000),
        "green",
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
        sensors=2,  # two TMP1075 die sensors (§10)
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
    # §7: BM1372/BM1373 (HEAD only): 327 ... 410 MHz, voltages as BM1370
    "BM1372": ([327, 350, 375, 380, 400, 410], [1000, 1060, 1100, 1150, 1200, 1250]),
    "BM1373": ([327, 350, 375, 380, 400, 410], [1000, 1060, 1100, 1150, 1200, 1250]),
}
