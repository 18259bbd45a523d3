"""The command line: thin click wiring over the library, one module per command group.

``tempctl`` (the console script) is ``tempctl.cli:cli``.
"""

from tempctl.cli import daemon, offline, sim, ui  # noqa: F401  (each registers its commands)
from tempctl.cli.base import cli

__all__ = ["cli"]
