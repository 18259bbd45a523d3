"""``python -m tempctl`` runs the same CLI as the ``tempctl`` console script."""

from .cli import cli

cli(prog_name="tempctl")
