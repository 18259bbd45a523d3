"""Reading tempctl's TOML and environment files safely: a file anyone may write is refused.

Apart from tempctl/config.py so that each stays small; ``ConfigError`` lives here because
these checks raise it (config.py re-exports it).
"""

from __future__ import annotations

import os
import stat
import tomllib
from typing import BinaryIO


class ConfigError(Exception):
    """A setting is missing, malformed or out of range. ``str()`` is one line."""


def one_line(text: str) -> str:
    return " ".join(text.splitlines())


def read_toml(path: str, label: str | None) -> dict | None:
    """The parsed file, or None when the (optional) default file does not exist."""
    try:
        with open(path, "rb") as fh:
            return load_private(fh, path)
    except FileNotFoundError:
        if label is None:
            return None
        raise ConfigError(f"{label}: file not found") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file: {e.strerror}") from None


def check_env_file(path: str | None) -> None:
    """systemd reads the EnvironmentFile before tempctl starts; the unit names it in
    TEMPCTL_ENV_FILE so tempctl can still refuse one that anyone may have written."""
    if not path:
        return
    try:
        st = os.stat(path)
    except OSError:
        return  # systemd's "-" prefix makes a missing env file legal
    if st.st_mode & stat.S_IWOTH:
        raise ConfigError(
            f"{path}: refusing a world-writable environment file (fix with: chmod o-w {path})"
        )


def load_private(fh: BinaryIO, path: str) -> dict:
    # fstat the open file so the file checked is the file read.
    st = os.fstat(fh.fileno())
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{path}: config file is not a regular file")
    if st.st_mode & stat.S_IWOTH:
        # Anyone on the host could raise the thresholds or point tempctl at another device.
        raise ConfigError(
            f"{path}: refusing a world-writable config file (fix with: chmod o-w {path})"
        )
    try:
        return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(one_line(f"{path}: not valid TOML: {e}")) from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid TOML: not UTF-8 text") from None
