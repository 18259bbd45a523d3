"""tempctl's command line: a thin click layer over the library modules.

Each command parses options, calls one or two library functions and prints.
Sections are marked by feature so the command list stays easy to scan.
"""

from __future__ import annotations

import click

from . import __version__
from .config import FIELDS, ConfigError, Settings, describe, load_settings

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT_SETTINGS)
@click.version_option(__version__, "-V", "--version", prog_name="tempctl")
def cli():
    """Keep a Bitaxe (AxeOS / ESP-Miner) out of thermal trouble while losing as
    little hashrate as possible.

    \b
    Quick start (no hardware needed):
        tempctl demo
    """


# --- configuration -----------------------------------------------------------


class SettingsError(click.ClickException):
    """A configuration problem: ``Error: <one line>`` on stderr, exit status 2."""

    exit_code = 2


_METAVARS = {"devices": "HOST[:PORT][,...]", "int": "INTEGER", "path": "PATH", "url": "URL",
             "host": "HOST"}


def _field_option(field):
    default = Settings().as_env().get(field.env, "none, required by run") or '""'
    help_text = f"{field.help} [env {field.env}; default: {default}]"
    if field.type == "bool":
        names = f"{field.flag}/--no-{field.flag[2:]}"
        return click.option(names, field.attr, default=None, help=help_text)
    # Values stay text here so load_settings reports every bad value in one style.
    metavar = ("[" + "|".join(field.choices) + "]" if field.choices
               else _METAVARS.get(field.type, field.type.upper()))
    return click.option(field.flag, field.attr, default=None, metavar=metavar, help=help_text)


def settings_options(fn):
    """Add one option per configuration field (default None = not given) plus --config."""
    for field in reversed(FIELDS):
        fn = _field_option(field)(fn)
    return click.option(
        "--config", "config_path", metavar="PATH", default=None,
        help="TOML config file [env TEMPCTL_CONFIG; default: /etc/tempctl/tempctl.toml "
             "when it exists]",
    )(fn)


def settings_from_cli(kwargs, require_devices=True) -> Settings:
    """Settings from a command's settings_options kwargs; exits 2 on a bad value."""
    flags = {f.attr: kwargs.get(f.attr) for f in FIELDS}
    try:
        settings = load_settings(flags, config_path=kwargs.get("config_path"),
                                 require_devices=require_devices)
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    for warning in settings.warnings:
        click.echo(f"Warning: {warning}", err=True)
    return settings


@cli.command(name="config")
@settings_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def config_cmd(as_json, **kwargs):
    """Show every effective setting and where it came from.

    Sources, highest precedence first: command line, environment, config file,
    default. BITAXE_IP is not required here.

    \b
    Example:
        TEMP_THRESHOLD=60 tempctl config --max-frequency 550
        tempctl config --json --config ./tempctl.toml
    """
    import json

    from tabulate import tabulate

    settings = settings_from_cli(kwargs, require_devices=False)
    info = describe(settings)
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"config file: {info['config_file'] or '(none)'}")
    shown = settings.as_env()  # values as a user would type them: 63, not 63.0
    rows = [(f.env, shown.get(f.env) or ("(not set)" if f.type == "devices" else '""'),
             info["settings"][f.attr]["source"]) for f in FIELDS]
    click.echo(tabulate(rows, headers=("name", "value", "source"), disable_numparse=True))
    if info["devices"]:
        click.echo("\ndevices:")
        devices = [
            (d["name"], d["url"], ", ".join(f"{k}={v}" for k, v in d["overrides"].items()))
            for d in info["devices"]
        ]
        click.echo(tabulate(devices, headers=("name", "url", "overrides")))


# --- emulator ----------------------------------------------------------------


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; loopback only unless --allow-remote.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port of the first device (device i gets PORT+i); 0 = free ports.")
@click.option("--scenario", default="heatwave", show_default=True, metavar="NAME|FILE",
              help="Ambient scenario: a name in replay/scenarios or a .toml file.")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=1.0,
              show_default=True, metavar="K", help="Run plant time K times faster than real.")
@click.option("--firmware", metavar="V", default=None,
              help="AxeOS version to emulate, e.g. v2.10.1 [default: the scenario's].")
@click.option("--asic", metavar="MODEL", default=None,
              help="BM1370, BM1368, BM1366, BM1397 or hex [default: the scenario's].")
@click.option("--faults", metavar="SPEC", default=None,
              help="Fault injection: name=probability or bare name (always), comma-separated, "
                   "e.g. timeout=0.05,5xx=0.1,reboot=0.001.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed for sensor noise and faults (device i uses SEED+i).")
@click.option("--devices", type=click.IntRange(1, 256), default=1, show_default=True,
              help="Number of emulated miners, one port each.")
@click.option("--start-hours", type=click.FloatRange(min=0), default=0.0, show_default=True,
              metavar="H", help="Start the scenario at hour H.")
@click.option("--private-ip-check", is_flag=True,
              help="Answer 401 to peers outside 10/8, 172.16/12, 192.168/16 like AxeOS v2.5+ "
                   "(this rejects loopback clients too).")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --host. It is a fake miner: keep it off real networks.")
def emulate(host, port, scenario, scale, firmware, asic, faults, seed, devices, start_hours,
            private_ip_check, allow_remote):
    """Serve fake Bitaxes (the AxeOS HTTP API over a thermal model) until SIGTERM/Ctrl-C.

    The first stdout line is the base URL; with --devices N there are N URL lines,
    then a line "ready". Besides the AxeOS routes each device answers
    GET /_emulator/state, POST /_emulator/faults and POST /_emulator/ambient.

    \b
    Example:
        tempctl emulate --port 8123
        tempctl emulate --scale 60 --start-hours 2 --devices 3
        tempctl emulate --firmware v2.10.1 --faults timeout=0.05,5xx=0.1 --seed 7
    """
    import signal
    import threading

    from .emulator import Emulator, parse_faults
    from .firmware import parse_version
    from .scenario import ScenarioError, load_scenario

    if not allow_remote and not _is_loopback(host):
        raise click.BadParameter(f"{host} is not a loopback address; add --allow-remote "
                                 "to serve a fake miner beyond this machine", param_hint="--host")
    try:
        parse_faults(faults)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--faults") from None
    if firmware is not None:
        try:
            parse_version(firmware)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--firmware") from None
    try:
        scn = load_scenario(scenario)
        emu = Emulator(scn, host=host.strip("[]"), port=port, devices=devices, scale=scale,
                       firmware=firmware, asic=asic, faults=faults, seed=seed,
                       start_hours=start_hours, private_ip_check=private_ip_check)
        emu.start()
    except (ScenarioError, ValueError, OSError) as e:
        raise click.ClickException(str(e)) from None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        for url in emu.urls:
            click.echo(url)
        if devices > 1:
            click.echo("ready")
        click.get_text_stream("stdout").flush()
        while not stop.wait(0.5):
            pass
    finally:
        emu.stop()

# --- daemon: run, status -----------------------------------------------------


def _setup_logging(level: str) -> None:
    import logging
    import sys

    # journald stamps each line itself; a terminal gets a time of day.
    fmt = "%(levelname)s %(message)s"
    if sys.stdout.isatty():
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(level=getattr(logging, level), format=fmt, stream=sys.stdout, force=True)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("transitions").setLevel(logging.WARNING)


def _open_log(path, create=True):
    from .log import Log, LogError

    try:
        return Log(path, create=create)
    except LogError as e:
        raise click.ClickException(str(e)) from None


@cli.command()
@settings_options
def run(**kwargs):
    """Guard the device(s): poll every CHECK_INTERVAL, throttle when hot, restore when stable.

    Every reading, transition, command and event is appended to the SQLite log
    (TEMPCTL_DB). Stops cleanly on SIGTERM/SIGINT; speaks sd_notify under systemd.

    \b
    Example:
        BITAXE_IP=127.0.0.1:8123 TEMP_THRESHOLD=63 tempctl run
        tempctl run --bitaxe-ip 127.0.0.1:8123 --dry-run --log-level DEBUG
    """
    import signal
    import sys
    import threading

    from .daemon import Daemon
    from .fleet import daemon_extras
    from .notify import Notifier

    settings = settings_from_cli(kwargs)
    _setup_logging(settings.log_level)
    log_ = _open_log(settings.db)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    notifier = Notifier()
    try:
        extras = daemon_extras(settings)  # metrics endpoint, alerts, retention job
    except OSError as e:
        notifier.close()
        log_.close()
        raise click.ClickException(f"metrics endpoint {settings.metrics_host}:"
                                   f"{settings.metrics_port}: {e.strerror or e}") from None
    try:
        daemon = Daemon(settings, log_=log_, notifier=notifier, stop=stop,
                        observers=extras.observers, maintenance=extras.maintenance)
        extras.attach(daemon.devices)
        code = daemon.run()
    finally:
        extras.close()
        notifier.close()
        log_.close()
    if daemon.in_flight:
        # A request still hangs after the stop grace (its command's outcome is logged as
        # interrupted): exit now rather than wait out its timeout joining the I/O threads.
        import logging
        import os

        logging.shutdown()
        sys.stdout.flush()
        os._exit(code)
    sys.exit(code)


@cli.command()
@settings_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def status(as_json, **kwargs):
    """Show each device's state, frequency, last reading and stable-window progress.

    Reads the log only, so it works while the daemon runs (and after it stopped).

    \b
    Example:
        tempctl status --db /var/lib/tempctl/tempctl.db
    """
    import json
    import time
    from pathlib import Path

    from .status import device_status, format_status

    settings = settings_from_cli(kwargs, require_devices=False)
    if not Path(settings.db).exists():
        raise click.ClickException(f"{settings.db}: no such tempctl log (set TEMPCTL_DB or --db)")
    log_ = _open_log(settings.db, create=False)
    now = int(time.time() * 1000)
    rows = [device_status(log_.conn, d, now) for d in log_.devices()]
    log_.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no devices in the log yet")
    else:
        click.echo("\n\n".join(format_status(r) for r in rows))


# --- replay, simulate, fit, tune ---------------------------------------------

# --- datasette ui, demo --------------------------------------------------------


@cli.command()
@settings_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; loopback only unless --allow-remote.")
@click.option("--port", type=click.IntRange(1, 65535), default=8001, show_default=True,
              help="Port to listen on.")
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --host. Datasette has no login: put it behind an "
                   "authenticating reverse proxy instead (see the README).")
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

    from . import ui as ui_mod

    settings = settings_from_cli(kwargs, require_devices=False)
    if not allow_remote and not _is_loopback(host):
        raise click.BadParameter(
            f"{host} is not a loopback address. Datasette has no authentication: see "
            f"\"Exposing it on a LAN\" in the README section \"{ui_mod.README_SECTION}\" "
            "(a reverse proxy with authentication, or an SSH tunnel), or add --allow-remote.",
            param_hint="--host")
    try:
        code = ui_mod.run_ui(settings.db, host, port, open_browser=open_browser,
                             echo=click.echo,
                             warn=lambda m: click.echo(f"Warning: {m}", err=True))
    except ui_mod.UIError as e:
        raise click.ClickException(str(e)) from None
    if code not in (0, -signal.SIGTERM, -signal.SIGINT):
        raise click.ClickException(f"Datasette exited with status {code}")


@cli.command()
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="S", help="Stop after S seconds [default: run until Ctrl-C].")
@click.option("--db", "db_path", metavar="PATH", default=None,
              help="SQLite log to write [default: a new tempctl-demo.db in the current "
                   "directory].")
@click.option("--port-ui", type=click.IntRange(0, 65535), default=8001, show_default=True,
              help="Datasette port on 127.0.0.1 (a free one when busy; 0 = any).")
@click.option("--scale", type=click.FloatRange(min=0, min_open=True), default=2000.0,
              show_default=True, metavar="K",
              help="Plant time runs K times faster than real time; the daemon's timings "
                   "follow.")
@click.option("--no-ui", is_flag=True, help="Don't start Datasette.")
def demo(duration, db_path, port_ui, scale, no_ui):
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
    """
    import sys
    from pathlib import Path

    from .demo import DemoError, run_demo

    try:
        code = run_demo(db=Path(db_path) if db_path else None, duration=duration,
                        port_ui=port_ui, scale=scale, ui=not no_ui)
    except DemoError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)


# --- fleet: prune -------------------------------------------------------------

@cli.command(name="prune")
@settings_options
@click.option("--batch-rows", type=click.IntRange(min=0), default=100_000, show_default=True,
              metavar="N", help="Commit after about N folded readings, so a running daemon "
                                "can write in between; 0 = one transaction.")
@click.option("--vacuum", is_flag=True,
              help="Compact the file afterwards (freed pages are reused anyway; this "
                   "returns them to the disk and needs free space the size of the log).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def prune_cmd(batch_rows, vacuum, as_json, **kwargs):
    """Fold raw readings older than TEMPCTL_RETENTION_DAYS into 1-minute rows.

    Transitions, commands and events are kept for ever; readings with the
    firmware's overheat flag stay raw. At least a day (or twice STABLE_TIMEFRAME)
    of raw readings is always kept. Safe to repeat and to run while the daemon
    runs (which also does this daily when TEMPCTL_RETENTION_DAYS is set).
    With --dry-run nothing changes: it reports what would be folded.

    \b
    Example:
        tempctl prune --retention-days 30 --db /var/lib/tempctl/tempctl.db
        tempctl prune --retention-days 7 --dry-run --json
    """
    import json
    import sqlite3
    import time
    from dataclasses import asdict
    from datetime import UTC, datetime
    from pathlib import Path

    from .retention import min_keep_ms, prune

    settings = settings_from_cli(kwargs, require_devices=False)
    if settings.retention_days <= 0:
        raise SettingsError("TEMPCTL_RETENTION_DAYS (not set): give the days of raw readings "
                            "to keep with --retention-days or TEMPCTL_RETENTION_DAYS")
    if not Path(settings.db).exists():
        raise click.ClickException(f"{settings.db}: no such tempctl log (set TEMPCTL_DB or --db)")
    log_ = _open_log(settings.db, create=False)
    now = int(time.time() * 1000)
    batch = None if settings.dry_run or batch_rows == 0 else batch_rows
    total = {"folded": 0, "minutes": 0, "devices": 0}
    try:
        while True:
            s = prune(log_, settings.retention_days, now, max_rows=batch,
                      min_keep_ms=min_keep_ms(settings), dry_run=settings.dry_run)
            for k in total:
                total[k] += getattr(s, k)
            if s.done:
                break
        if vacuum and not settings.dry_run:
            log_.conn.execute("VACUUM")
    except sqlite3.Error as e:  # locked for too long, disk full, ...
        raise click.ClickException(f"{settings.db}: {e}") from None
    finally:
        log_.close()
    out = {**asdict(s), **total}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    cutoff = datetime.fromtimestamp(s.cutoff_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    verb = "would fold" if settings.dry_run else "folded"
    click.echo(f"{verb} {total['folded']} readings from before {cutoff} into "
               f"{total['minutes']} minute rows ({total['devices']} device(s))")
