"""``python -m tempctl`` runs the same CLI as the ``tempctl`` console script."""

from tempctl.cli.main import cli

cli(prog_name="tempctl")
