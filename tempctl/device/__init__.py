"""Talking to a Bitaxe: the AxeOS HTTP client, parsing of its answers, capabilities.

Import from here (``from tempctl.device import Client, parse_info``): the modules
behind this facade may be split or renamed.
"""

from dataclasses import dataclass

from tempctl.device.axeos import (
    AxeOSError,
    BadResponse,
    Capabilities,
    Client,
    Rejected,
    Timeout,
    TooLarge,
    Unreachable,
    capabilities,
    normalize_url,
    parse_info,
    parse_statistics,
    parse_version,
    plausible_temp,
)


@dataclass(frozen=True, slots=True)
class DeviceCapabilities:
    """What the driver needs to know (core.driver.Capabilities), from one reading."""

    live_frequency: bool
    trip_latches: bool
    write_refused: str | None


def reading_capabilities(reading) -> DeviceCapabilities:
    caps = capabilities(reading.version, reading.asic_model)
    parsed, _ = parse_version(reading.version)
    refused = None
    if caps.partial_patch_crashes:
        refused = (
            f"firmware {reading.version!r} is unknown or v2.0.0-v2.0.3 (a partial PATCH "
            "crashes those)"
        )
    # v2.1.9-v2.10 latch the overheat trip at 50 MHz until someone writes (axeos-api.md §9.2)
    latches = parsed is not None and (2, 1, 9) <= parsed < (2, 11, 0)
    return DeviceCapabilities(caps.live_frequency, latches, refused)


__all__ = [
    "DeviceCapabilities",
    "reading_capabilities",
    "AxeOSError",
    "BadResponse",
    "Capabilities",
    "Client",
    "Rejected",
    "Timeout",
    "TooLarge",
    "Unreachable",
    "capabilities",
    "normalize_url",
    "parse_info",
    "parse_statistics",
    "parse_version",
    "plausible_temp",
]
