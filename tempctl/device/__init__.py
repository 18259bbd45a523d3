"""Talking to a Bitaxe: the AxeOS HTTP client, parsing of its answers, capabilities.

Import from here (``from tempctl.device import Client, parse_info``): the modules
behind this facade may be split or renamed.
"""

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

__all__ = [
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
