"""tempctl's command line: a thin click layer over the library modules.

Each command parses options, calls one or two library functions and prints.
Sections are marked by feature so the command list stays easy to scan.
"""

from __future__ import annotations

import click

from tempctl import __version__
from tempctl.config import FIELDS, ConfigError, Settings, describe, load_settings

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


_METAVARS = {
    "devices": "HOST[:PORT][,...]",
    "int": "INTEGER",
    "path": "PATH",
    "url": "URL",
    "host": "HOST",
}


def _field_option(field):
    default = Settings().as_env().get(field.env, "none, required by run") or '""'
    help_text = f"{field.help} [env {field.env}; default: {default}]"
    if field.type == "bool":
        names = f"{field.flag}/--no-{field.flag[2:]}"
        return click.option(names, field.attr, default=None, help=help_text)
    # Values stay text here so load_settings reports every bad value in one style.
    metavar = (
        "[" + "|".join(field.choices) + "]"
        if field.choices
        else _METAVARS.get(field.type, field.type.upper())
    )
    return click.option(field.flag, field.attr, default=None, metavar=metavar, help=help_text)


def settings_options(fn):
    """Add one option per configuration field (default None = not given) plus --config."""
    for field in reversed(FIELDS):
        fn = _field_option(field)(fn)
    return click.option(
        "--config",
        "config_path",
        metavar="PATH",
        default=None,
        help="TOML config file [env TEMPCTL_CONFIG; default: /etc/tempctl/tempctl.toml "
        "when it exists]",
    )(fn)


def settings_from_cli(kwargs, require_devices=True) -> Settings:
    """Settings from a command's settings_options kwargs; exits 2 on a bad value."""
    flags = {f.attr: kwargs.get(f.attr) for f in FIELDS}
    try:
        settings = load_settings(
            flags, config_path=kwargs.get("config_path"), require_devices=require_devices
        )
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
    rows = [
        (
            f.env,
            shown.get(f.env) or ("(not set)" if f.type == "devices" else '""'),
            info["settings"][f.attr]["source"],
        )
        for f in FIELDS
    ]
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
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; loopback only unless --allow-remote.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the first device (device i gets PORT+i); 0 = free ports.",
)
@click.option(
    "--scenario",
    default="heatwave",
    show_default=True,
    metavar="NAME|FILE",
    help="Ambient scenario: a name in replay/scenarios or a .toml file.",
)
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    metavar="K",
    help="Run plant time K times faster than real.",
)
@click.option(
    "--firmware",
    metavar="V",
    default=None,
    help="AxeOS version to emulate, e.g. v2.10.1 [default: the scenario's].",
)
@click.option(
    "--asic",
    metavar="MODEL",
    default=None,
    help="BM1370, BM1368, BM1366, BM1397 or hex [default: the scenario's].",
)
@click.option(
    "--faults",
    metavar="SPEC",
    default=None,
    help="Fault injection: name=probability or bare name (always), comma-separated, "
    "e.g. timeout=0.05,5xx=0.1,reboot=0.001.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed for sensor noise and faults (device i uses SEED+i).",
)
@click.option(
    "--devices",
    type=click.IntRange(1, 256),
    default=1,
    show_default=True,
    help="Number of emulated miners, one port each.",
)
@click.option(
    "--start-hours",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    metavar="H",
    help="Start the scenario at hour H.",
)
@click.option(
    "--private-ip-check",
    is_flag=True,
    help="Answer 401 to peers outside 10/8, 172.16/12, 192.168/16 like AxeOS v2.5+ "
    "(this rejects loopback clients too).",
)
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --host. It is a fake miner: keep it off real networks.",
)
def emulate(
    host,
    port,
    scenario,
    scale,
    firmware,
    asic,
    faults,
    seed,
    devices,
    start_hours,
    private_ip_check,
    allow_remote,
):
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

    from tempctl.sim.emulator import Emulator, parse_faults
    from tempctl.sim.firmware import parse_version
    from tempctl.sim.scenario import ScenarioError, load_scenario

    if not allow_remote and not _is_loopback(host):
        raise click.BadParameter(
            f"{host} is not a loopback address; add --allow-remote "
            "to serve a fake miner beyond this machine",
            param_hint="--host",
        )
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
        emu = Emulator(
            scn,
            host=host.strip("[]"),
            port=port,
            devices=devices,
            scale=scale,
            firmware=firmware,
            asic=asic,
            faults=faults,
            seed=seed,
            start_hours=start_hours,
            private_ip_check=private_ip_check,
        )
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
    from tempctl.store.eventlog import Log, LogError

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

    from tempctl.daemon.fleet import daemon_extras
    from tempctl.daemon.loop import Daemon
    from tempctl.daemon.notify import Notifier

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
        raise click.ClickException(
            f"metrics endpoint {settings.metrics_host}:{settings.metrics_port}: {e.strerror or e}"
        ) from None
    try:
        daemon = Daemon(
            settings,
            log_=log_,
            notifier=notifier,
            stop=stop,
            observers=extras.observers,
            maintenance=extras.maintenance,
        )
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

    from tempctl.store.status import device_status, format_status

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


def _with_sets(settings, assignments):
    """settings with --set KEY=VALUE applied (same names as the configuration); exits 2."""
    from dataclasses import replace

    from tempctl.config import parse_assignment, validate

    try:
        values = dict(parse_assignment(a) for a in assignments)
        return validate(replace(settings, **values)), values
    except ConfigError as e:
        raise SettingsError(str(e)) from None


def _read_log(path):
    """A tempctl log opened for reading (refuses other files)."""
    import sqlite3

    from tempctl.store.eventlog import LogError, check_file

    try:
        check_file(path)
        return sqlite3.connect(path)
    except (LogError, sqlite3.Error) as e:
        raise click.ClickException(str(e)) from None


def _time_option(name):
    return click.option(
        name,
        metavar="ISO|MS",
        default=None,
        help="UTC date/time (2026-01-01T06:00) or epoch milliseconds.",
    )


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", metavar="NAME", help="Only this device.")
@click.option("--run", "run_id", type=int, metavar="ID", help="Only this run (runs.id).")
@_time_option("--since")
@_time_option("--until")
@click.option(
    "--check",
    is_flag=True,
    help="Reproduce the recorded decisions exactly (the default without --set).",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Counterfactual: replay with this setting changed (repeatable).",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def replay(db, device, run_id, since, until, check, assignments, as_json):
    """Feed a recorded log back through the controller, offline.

    Without --set it checks that every run replays to the recorded transitions and
    commands, and exits 1 at the first divergence (both sides printed). With --set it
    shows what those settings would have done, temperatures adjusted for the frequency
    they would have run (plant fitted from the same log), next to what was recorded.

    \b
    Example:
        tempctl replay tempctl.db
        tempctl replay tempctl.db --device sim-tempctl --since 2026-01-01T06:00
        tempctl replay tempctl.db --set TEMP_THRESHOLD=61 --set STABLE_TIMEFRAME=0.5
    """
    import json
    import sys

    from tempctl.offline import replay as rp

    if check and assignments:
        raise click.UsageError("--check reproduces the log as recorded; drop --set")
    try:
        since_ms = rp.parse_time(since) if since else None
        until_ms = rp.parse_time(until) if until else None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since/--until") from None
    conn = _read_log(db)
    try:
        if not assignments:
            result = rp.check(
                conn, device=device, run_id=run_id, since_ms=since_ms, until_ms=until_ms
            )
            click.echo(
                json.dumps(result.to_dict(), indent=2) if as_json else rp.format_check(result)
            )
            sys.exit(0 if result.ok else 1)
        _, overrides = _with_sets(Settings(), assignments)
        report = rp.counterfactual(
            conn, overrides, device=device, run_id=run_id, since_ms=since_ms, until_ms=until_ms
        )
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    finally:
        conn.close()
    click.echo(json.dumps(report, indent=2) if as_json else rp.format_counterfactual(report))


@cli.command()
@click.option(
    "--scenario",
    default="heatwave",
    show_default=True,
    metavar="NAME|FILE",
    help="A scenario in replay/scenarios or a .toml file.",
)
@click.option(
    "--policy",
    "policies",
    multiple=True,
    metavar="tempctl|seed|fixed:MHZ",
    help="Who sets the frequency (repeatable; default tempctl). seed:S polls the "
    "original script every S seconds.",
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="A setting for the run, e.g. TEMP_THRESHOLD=62 (repeatable).",
)
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="N",
    help="Simulated days [default: the scenario's length].",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.2),
    default=5.0,
    show_default=True,
    metavar="S",
    help="Seconds between polls (CHECK_INTERVAL).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="OUT.db",
    help="Write the log (one device per policy: sim-tempctl, sim-seed, ...).",
)
@click.option(
    "--plot",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="OUT.png",
    help="Temperature, threshold, frequency and state bands over time.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed for sensor and hashrate noise."
)
def simulate(scenario, policies, assignments, days, poll, db, plot, as_json, seed):
    """Run policies against the emulated firmware on a fake clock, side by side.

    Each policy drives its own copy of the emulator's device (no HTTP), and the report
    adds the oracle: the most hashrate a controller with perfect knowledge of the room
    could sustain at or below the threshold. Settings come from the defaults and --set.

    \b
    Example:
        tempctl simulate --scenario heatwave --policy tempctl --policy seed --json
        tempctl simulate --policy tempctl --set TEMP_THRESHOLD=62 --db out.db --plot out.png
        tempctl simulate --scenario daynight --days 1 --policy fixed:500
    """
    import json

    from tempctl.sim.scenario import ScenarioError, load_scenario
    from tempctl.sim.simulate import format_report
    from tempctl.sim.simulate import simulate as run_simulation
    from tempctl.store.eventlog import LogError

    settings, _ = _with_sets(Settings(), assignments)
    try:
        scn = load_scenario(scenario)
        report = run_simulation(
            scn,
            list(policies) or ["tempctl"],
            settings,
            days=days,
            poll_s=poll,
            seed=seed,
            db=db,
            plot_path=plot,
        )
    except (ScenarioError, LogError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False))
@click.option("--device", metavar="NAME", help="Only this device [default: each one].")
@_time_option("--since")
@_time_option("--until")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def fit(db, device, since, until, as_json):
    """Fit the thermal plant of a device from its log, with the quality of each fit.

    Power against f·V² (and leakage), °C per W with the fast/slow time constants, the
    steady-state slope over settings segments, the VR slope and an ambient estimate over
    time; R², RMSE and the error on held-out blocks of time.

    \b
    Example:
        tempctl fit tempctl.db
        tempctl fit replay/runs/pmcochrane-gamma-1hz.db --json
    """
    import json

    from tempctl.offline import fit as ft
    from tempctl.offline.replay import parse_time

    conn = _read_log(db)
    try:
        devices = (
            [device]
            if device
            else [r[0] for r in conn.execute("SELECT DISTINCT device FROM readings ORDER BY 1")]
        )
        fits = [
            ft.fit_device(
                conn, d, parse_time(since) if since else None, parse_time(until) if until else None
            )
            for d in devices
        ]
    except ft.FitError as e:
        raise click.ClickException(str(e)) from None
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--since/--until") from None
    finally:
        conn.close()
    if as_json:
        click.echo(json.dumps([f.to_dict() for f in fits], indent=2))
    else:
        click.echo("\n\n".join(ft.format_fit(f) for f in fits) or "no readings")


@cli.command()
@click.argument("db", type=click.Path(exists=True, dir_okay=False), required=False)
@click.option(
    "--scenario",
    metavar="NAME|FILE",
    default=None,
    help="Judge candidates by simulation instead of a log.",
)
@click.option(
    "--grid",
    "grids",
    multiple=True,
    required=True,
    metavar="KEY=A:B:STEP|A,B,...",
    help="Values of one setting (repeatable; the grid is their product).",
)
@click.option(
    "--random",
    "random_n",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="Try N random grid points instead of all.",
)
@click.option(
    "--jobs", type=click.IntRange(min=1), default=2, show_default=True, help="Worker processes."
)
@click.option(
    "--set",
    "assignments",
    multiple=True,
    metavar="KEY=VALUE",
    help="A fixed setting for every candidate (repeatable).",
)
@click.option("--device", metavar="NAME", help="The device in DB [needed when it has several].")
@click.option(
    "--days",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="N",
    help="Simulated days per candidate [default: the scenario's length].",
)
@click.option(
    "--poll",
    type=click.FloatRange(min=0.2),
    default=5.0,
    show_default=True,
    metavar="S",
    help="Seconds between polls in simulation.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for noise and --random.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def tune(db, scenario, grids, random_n, jobs, assignments, device, days, poll, seed, as_json):
    """Search settings on a log (counterfactual replay) or a scenario (simulation).

    Prints the Pareto frontier of hash kept, °C·min above the threshold and frequency
    changes per day, and the recommended settings as environment lines.

    \b
    Example:
        tempctl tune --scenario heatwave --grid "TEMP_THRESHOLD=62:64:0.5" \\
            --grid "STABLE_TIMEFRAME=0.25,0.5,1"
        tempctl tune tempctl.db --grid "TEMP_THRESHOLD=60,61,62" --random 2 --json
    """
    import json
    import sys

    from tempctl.offline import tune as tn

    if (db is None) == (scenario is None):
        raise click.UsageError("give either a log DB or --scenario")
    try:
        axes = [tn.parse_grid(g) for g in grids]
        cands = tn.candidates(axes, random_n, seed)
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    source = _tune_source(db, scenario, assignments, device, days, poll, seed)
    with click.progressbar(
        length=len(cands) + 1, label="candidates", file=sys.stderr, show_pos=True
    ) as bar:
        report = tn.tune(source, cands, jobs=jobs, progress=bar.update)
    click.echo(json.dumps(report, indent=2) if as_json else tn.format_tune(report))


def _tune_source(db, scenario, assignments, device, days, poll, seed):
    from tempctl.offline.tune import Source

    if scenario is not None:
        from tempctl.sim.scenario import ScenarioError, load_scenario

        try:
            scn = load_scenario(scenario)
        except ScenarioError as e:
            raise click.ClickException(str(e)) from None
        settings, overrides = _with_sets(Settings(), assignments)
        return Source(
            settings, scenario=scn, days=days, poll_s=poll, seed=seed, base_overrides=overrides
        )
    from tempctl.offline.fit import FitError, fit_device
    from tempctl.offline.replay import response_from_fit, select_runs, settings_for

    conn = _read_log(db)
    try:
        runs = select_runs(conn, device=device)
        devices = sorted({d for r in runs for d in r.devices})
        if len(devices) != 1:
            raise click.UsageError(
                f"{db} has devices {', '.join(devices) or 'none'}; choose one with --device"
            )
        dev = devices[0]
        _, overrides = _with_sets(Settings(), assignments)
        settings = settings_for(runs[0].config, dev)
        try:
            response = response_from_fit(fit_device(conn, dev))
        except FitError:
            response = response_from_fit(None)
    finally:
        conn.close()
    return Source(settings, db=db, device=dev, response=response, base_overrides=overrides)


# --- datasette ui, demo --------------------------------------------------------


@cli.command()
@settings_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; loopback only unless --allow-remote.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8001,
    show_default=True,
    help="Port to listen on.",
)
@click.option("--open", "open_browser", is_flag=True, help="Open the dashboard in a browser.")
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a non-loopback --host. Datasette has no login: put it behind an "
    "authenticating reverse proxy instead (see the README).",
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
    if not allow_remote and not _is_loopback(host):
        raise click.BadParameter(
            f"{host} is not a loopback address. Datasette has no authentication: see "
            f'"Exposing it on a LAN" in the README section "{ui_mod.README_SECTION}" '
            "(a reverse proxy with authentication, or an SSH tunnel), or add --allow-remote.",
            param_hint="--host",
        )
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
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True),
    default=2000.0,
    show_default=True,
    metavar="K",
    help="Plant time runs K times faster than real time; the daemon's timings follow.",
)
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

    from tempctl.sim.demo import DemoError, run_demo

    try:
        code = run_demo(
            db=Path(db_path) if db_path else None,
            duration=duration,
            port_ui=port_ui,
            scale=scale,
            ui=not no_ui,
        )
    except DemoError as e:
        raise click.ClickException(str(e)) from None
    sys.exit(code)


# --- fleet: prune -------------------------------------------------------------


@cli.command(name="prune")
@settings_options
@click.option(
    "--batch-rows",
    type=click.IntRange(min=0),
    default=100_000,
    show_default=True,
    metavar="N",
    help="Commit after about N folded readings, so a running daemon "
    "can write in between; 0 = one transaction.",
)
@click.option(
    "--vacuum",
    is_flag=True,
    help="Compact the file afterwards (freed pages are reused anyway; this "
    "returns them to the disk and needs free space the size of the log).",
)
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

    from tempctl.store.retention import min_keep_ms, prune

    settings = settings_from_cli(kwargs, require_devices=False)
    if settings.retention_days <= 0:
        raise SettingsError(
            "TEMPCTL_RETENTION_DAYS (not set): give the days of raw readings "
            "to keep with --retention-days or TEMPCTL_RETENTION_DAYS"
        )
    if not Path(settings.db).exists():
        raise click.ClickException(f"{settings.db}: no such tempctl log (set TEMPCTL_DB or --db)")
    log_ = _open_log(settings.db, create=False)
    now = int(time.time() * 1000)
    batch = None if settings.dry_run or batch_rows == 0 else batch_rows
    total = {"folded": 0, "minutes": 0, "devices": 0}
    try:
        while True:
            s = prune(
                log_,
                settings.retention_days,
                now,
                max_rows=batch,
                min_keep_ms=min_keep_ms(settings),
                dry_run=settings.dry_run,
            )
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
    click.echo(
        f"{verb} {total['folded']} readings from before {cutoff} into "
        f"{total['minutes']} minute rows ({total['devices']} device(s))"
    )
