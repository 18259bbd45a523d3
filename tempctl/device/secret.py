"""Passwords from files (TEMPCTL_DEVICE_PASSWORD_FILE, TEMPCTL_ALERT_PASSWORD_FILE).

Only the path is ever shown; errors name the file, never its contents. ``PasswordFile``
can be read again after a 401, so a password changed on the device and in the file works
without a restart (issue 23 item 9).
"""

from __future__ import annotations

import os
from pathlib import Path


def read_password_file(path: str | Path) -> str:
    """A password from a file: its first line, without the line end.

    Raises ValueError naming the file (never the password) when it is unreadable or empty.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"password file {str(path)!r}: {exc.strerror or exc}") from None
    try:
        first = raw.decode("utf-8").splitlines()[0] if raw.strip() else ""
    except UnicodeDecodeError:
        raise ValueError(f"password file {str(path)!r}: not UTF-8 text") from None
    if not first:
        raise ValueError(f"password file {str(path)!r} is empty")
    return first


def _signature(path: str | Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class PasswordFile:
    """The password in ``path``, read now (ValueError when unusable) and on ``reread()``."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._seen = _signature(path)
        self.value = read_password_file(path)

    def __repr__(self) -> str:
        return f"PasswordFile({self.path!r})"  # never the password

    def changed(self) -> bool:
        """The file was written (or replaced) since it was last read."""
        return _signature(self.path) != self._seen

    def reread(self) -> bool:
        """Read the file again; True when it now holds a different, usable password."""
        self._seen = _signature(self.path)
        try:
            value = read_password_file(self.path)
        except ValueError:
            return False  # a file being rewritten, or gone: keep the password we have
        if value == self.value:
            return False
        self.value = value
        return True


def password_from(path: str | Path | None) -> PasswordFile | None:
    """``PasswordFile(path)``, or None when no file is configured (empty path)."""
    return PasswordFile(path) if path else None
