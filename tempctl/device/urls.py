"""Device addresses as a user types them, turned into one canonical ``http://host[:port]``."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

__all__ = ["normalize_url"]

_HOSTNAME = re.compile(r"^[a-z0-9_]([a-z0-9_.-]{0,251}[a-z0-9_])?\.?$")


def normalize_url(value: str) -> str:
    """Return ``http://host[:port]`` for a device address as a user would type it.

    Accepts ``http://bitaxe.local``, ``bitaxe.local``, ``host:port``, ``[::1]:8080``,
    ``::1`` and ``localhost``; strips a trailing ``/`` and a redundant ``:80``.
    Refuses empty values, paths, queries, user info and any scheme but http.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError("device address is empty")
    text = value.strip()
    scheme, sep, rest = text.partition("://")
    if sep:
        scheme = scheme.lower()
        if scheme == "https":
            raise ValueError(
                f"{value!r}: AxeOS serves plain HTTP only (there is no TLS on the device); "
                "use http://host[:port]"
            )
        if scheme != "http":
            raise ValueError(f"{value!r}: unsupported scheme {scheme!r}; use http://host[:port]")
    else:
        rest = text
    rest = rest.rstrip("/")
    if not rest:
        raise ValueError(f"{value!r}: no host")
    if any(c in rest for c in "/?#"):
        raise ValueError(f"{value!r}: give only host[:port], without a path or query")
    if "@" in rest:
        raise ValueError(
            f"{value!r}: user info is not supported in the address "
            "(a device password goes in TEMPCTL_DEVICE_PASSWORD_FILE)"
        )

    port: int | None = None
    if rest.count(":") >= 2 and not rest.startswith("["):
        host = _ipv6(rest, value)  # a bare IPv6 address cannot carry a port
    else:
        if rest.startswith("["):
            _ipv6(rest.partition("]")[0] + "]", value)  # urlsplit's own message is vaguer
        parts = urlsplit("http://" + rest)
        try:
            port = parts.port
        except ValueError as exc:
            raise ValueError(f"{value!r}: bad port ({exc})") from None
        raw_host = parts.hostname or ""
        if rest.startswith("["):
            host = _ipv6(raw_host, value)
        elif _is_ipv4(raw_host) or _HOSTNAME.match(raw_host):
            host = raw_host
        else:
            raise ValueError(f"{value!r}: {raw_host!r} is not a valid host name or address")
    if port == 0:
        raise ValueError(f"{value!r}: port 0 is not a usable port")
    suffix = f":{port}" if port not in (None, 80) else ""
    return f"http://{host}{suffix}"


def _ipv6(text: str, original: str) -> str:
    try:
        return f"[{ipaddress.IPv6Address(text.strip('[]'))}]"
    except ValueError:
        raise ValueError(f"{original!r}: {text!r} is not a valid IPv6 address") from None


def _is_ipv4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
