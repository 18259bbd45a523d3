"""``python -m tempctl`` runs the same CLI as the ``tempctl`` console script."""

from tempctl.cli import cli

cli(prog_name="tempctl")
