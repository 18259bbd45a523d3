"""Talking to a Bitaxe: the AxeOS HTTP client, parsing of its answers, capabilities.

Import from here (``from tempctl.device import Client, parse_info``): the modules
behind this facade may be split or renamed. They are:

* ``errors``: the ``AxeOSError`` family;  ``urls``: ``normalize_url``;
* ``values``: checked access to untrusted JSON values (``plausible_temp``);
* ``parse``: info body → ``Reading`` (overheat signature, faults);
* ``statistics``: statistics ring → backfilled readings;
* ``capabilities``: what a firmware can do, ``parse_version`` (the project's only one);
* ``transport`` and ``client``: HTTP, retries, deadline, body caps, Basic auth;
* ``secret``: passwords from files, read again after a 401.
"""

from tempctl.device.capabilities import (
    Capabilities,
    DeviceCapabilities,
    capabilities,
    capabilities_of,
    key_floor,
    parse_version,
    reading_capabilities,
)
from tempctl.device.client import (
    DEVICE_USER,
    MAX_BODY,
    PATCH_MAX_BYTES,
    STATS_MAX_BODY,
    Client,
)
from tempctl.device.errors import (
    AuthRequired,
    AxeOSError,
    BadResponse,
    Rejected,
    Timeout,
    TooLarge,
    Unreachable,
)
from tempctl.device.parse import FAULTS, parse_info
from tempctl.device.secret import PasswordFile, password_from, read_password_file
from tempctl.device.statistics import STATS_COLUMNS, parse_statistics
from tempctl.device.urls import normalize_url
from tempctl.device.values import plausible_temp

__all__ = [
    "DEVICE_USER",
    "FAULTS",
    "MAX_BODY",
    "PATCH_MAX_BYTES",
    "STATS_COLUMNS",
    "STATS_MAX_BODY",
    "AuthRequired",
    "AxeOSError",
    "BadResponse",
    "Capabilities",
    "Client",
    "DeviceCapabilities",
    "PasswordFile",
    "Rejected",
    "Timeout",
    "TooLarge",
    "Unreachable",
    "capabilities",
    "capabilities_of",
    "key_floor",
    "normalize_url",
    "parse_info",
    "parse_statistics",
    "parse_version",
    "password_from",
    "plausible_temp",
    "read_password_file",
    "reading_capabilities",
]
