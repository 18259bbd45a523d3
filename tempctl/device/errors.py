"""The one error family of the AxeOS client: every failed exchange is an ``AxeOSError``.

``kind`` is a stable short string for logs, metrics and the readings table.
"""

from __future__ import annotations

__all__ = [
    "AuthRequired",
    "AxeOSError",
    "BadResponse",
    "Rejected",
    "Timeout",
    "TooLarge",
    "Unreachable",
]


class AxeOSError(Exception):
    """Any failed exchange with the device. ``kind`` is a stable string for logs and metrics."""

    kind = "error"

    def __init__(self, message: str, *, url: str, status: int | None = None) -> None:
        super().__init__(message)
        self.url = url
        self.status = status


class Unreachable(AxeOSError):
    """Connection refused, name resolution failed, or the connection was reset."""

    kind = "unreachable"


class Timeout(AxeOSError):
    """Connect or read timeout, or the whole exchange ran past its deadline."""

    kind = "timeout"


class BadResponse(AxeOSError):
    """Non-200 on GET, a redirect, non-JSON, truncated JSON, not an object, 5xx after retries."""

    kind = "bad_response"


class TooLarge(BadResponse):
    """The body (after decompression) went over the cap; the rest is never read."""

    kind = "too_large"


class Rejected(AxeOSError):
    """A write was answered 4xx, e.g. 400 "Wrong API input" (nothing was applied, §5.2)."""

    kind = "rejected"

    def __init__(self, message: str, *, url: str, status: int, body: str) -> None:
        super().__init__(message, url=url, status=status)
        self.body = body


class AuthRequired(AxeOSError):
    """HTTP 401 from a device that asks for a password (open ESP-Miner PR #1750: body
    ``{"authRequired":1}`` with ``WWW-Authenticate: Basic realm="Bitaxe"``, axeos-api.md §14),
    or a password that it refused."""

    kind = "auth"
