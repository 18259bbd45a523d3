"""tempctl ui, demo: Datasette and the quick-start demo."""

from __future__ import annotations

import click

from tempctl.cli.base import cli, is_loopback, settings_from_cli, settings_options
from tempctl.cli.options import allow_remote_option, host_option, scale_option

# --- datasette ui, demo --------------------------------------------------------


@cli.command()
@settings_options
@host_option
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8001,
    show_default=True,
    help="Port to listen on.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@allow_remote_option(
    "Datasette has no login: put it behind an authenticating reverse proxy "
    "instead (see the README)."
)
def ui(host, port, open_browser, allow_remote, **kwargs):
    """Browse the log in Datasette: canned queries, dashboards, read-only.

    Serves the SQLite log (TEMPCTL_DB or --db) while the daemon writes it;
    nothing served can change it. Stops on Ctrl-C/SIGTERM.

    \b
    Example:
        tempctl ui --db /var/lib/tempctl/tempctl.db
        tempctl ui --port 8002 --open
    """
    import signal

    from tempctl.ui import server as ui_mod

    settings = settings_from_cli(kwargs, require_devices=False)
    if not allow_remote and not is_loopback(host):
        raise click.BadParameter(
            f"{host} is not a loopback address. Datasette has no authentication: see "
            f'"Exposing it on a LAN" in the README section "{ui_mod.README_SECTION}" '
            "(a reverse proxy with authentication, or an SSH tunnel), or add --allow-remote.",
            param_hint="--host",
        )
    from tempctl.cli.offline import require_log

    require_log(settings.db)  # bad input: one line, exit 2 (as replay and status)
    try:
        code = ui_mod.run_ui(
            settings.db,
            host,
            port,
            open_browser=open_browser,
            echo=click.echo,
            warn=lambda m: click.echo(f"Warning: {m}", err=True),
        )
    except ui_mod.UIError as e:
        raise click.ClickException(str(e)) from None
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise click.ClickException(f"Datasette exited with status {code}")


@cli.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="S",
    help="Stop after S seconds [default: run until Ctrl-C].",
)
@click.option(
    "--db",
    "db_path",
    metavar="PATH",
    default=None,
    help="SQLite log to write [default: a new tempctl-demo.db in the current directory].",
)
@click.option(
    "--port-ui",
    type=click.IntRange(0, 65535),
    default=8001,
    show_default=True,
    help="Datasette port on 127.0.0.1 (a free one when busy; 0 = any).",
)
@scale_option(
    2000.0, help="Run plant time K times faster than real time; the daemon's timings follow."
)
@click.option("--no-ui", is_flag=True, help="Don't start Datasette.")
@click.option(
    "--mqtt",
    "mqtt_url",
    metavar="URL",
    default="",
    help="Also publish the miner to Home Assistant through this MQTT broker "
    "(mqtt://[user@]host[:port], as TEMPCTL_MQTT_URL; the password-less brokers only).",
)
def demo(duration, db_path, port_ui, scale, no_ui, mqtt_url):
    """See tempctl guard an emulated Bitaxe through a heat wave, in about a minute.

    Starts a fake Bitaxe Gamma (heatwave scenario, compressed time), the daemon
    and Datasette, all on loopback and with no configuration; shows a live status
    line; stops on Ctrl-C or after --duration and prints what happened. The log
    stays behind for `tempctl ui --db PATH`.

    \b
    Example:
        tempctl demo
        tempctl demo --duration 60 --no-ui
        tempctl demo --db /tmp/heatwave.db --port-ui 8002
        tempctl demo --mqtt mqtt://127.0.0.1:1883
    """
    import sys
    from pathlib import Path

    from tempctl.fields import BY_ATTR
    from tempctl.sim.demo import DemoError, run_demo

    problem = BY_ATTR["mqtt_url"].validator(mqtt_url)
    if problem:  # the password is never echoed
        raise click.BadParameter(problem, param_hint="--mqtt")
    try:
        code = run_demo(
            db=Path(db_path) if db_path else None,
            duration=duration,
            port_ui=port_ui,
            scale=scale,
            ui=not no_ui,
            mqtt_url=mqtt_url,
        )
    except DemoError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)
