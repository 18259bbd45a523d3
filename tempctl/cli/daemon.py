"""tempctl run, status, prune: the daemon and its log."""

from __future__ import annotations

import click

from tempctl.cli.base import (
    SettingsError,
    cli,
    is_loopback,
    settings_from_cli,
    settings_options,
)
from tempctl.cli.options import allow_remote_option, json_option

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


def _open_log(path, **kw):
    from tempctl.store.eventlog import Log, LogBusy, LogError

    try:
        return Log(path, **kw)
    except LogBusy as e:  # a second daemon on the same log: a usage error, exit 2
        raise SettingsError(str(e)) from None
    except LogError as e:
        raise click.ClickException(str(e)) from None


METRICS_REMOTE = (
    "The metrics page has no login and names every miner: keep it on loopback (a "
    "Prometheus on this machine, an SSH tunnel or an authenticating reverse proxy)."
)


def check_metrics_host(settings, allow_remote: bool) -> None:
    """Refuse a metrics endpoint beyond loopback unless --allow-remote (as `tempctl ui`)."""
    host = settings.metrics_host
    if settings.metrics_port and not allow_remote and not is_loopback(host):
        raise SettingsError(
            f"TEMPCTL_METRICS_HOST (--metrics-host) {host} is not a loopback address. "
            f"{METRICS_REMOTE} Add --allow-remote to serve it there anyway."
        )


@cli.command()
@settings_options
@allow_remote_option(METRICS_REMOTE, "--metrics-host")
def run(allow_remote, **kwargs):
    """Guard the device(s): poll every CHECK_INTERVAL, throttle when hot, restore when stable.

    Every reading, transition, command and event is appended to the SQLite log
    (TEMPCTL_DB). Stops cleanly on SIGTERM/SIGINT; speaks sd_notify under systemd.

    A frequency you lower by hand in AxeOS is kept as a cap until you raise it again
    (TEMPCTL_USER_CAP=keep, TEMPCTL_USER_CAP_HOURS); TEMPCTL_USER_CAP=off climbs back.

    \b
    Example:
        BITAXE_IP=127.0.0.1:8123 TEMP_THRESHOLD=63 tempctl run
        tempctl run --bitaxe-ip 127.0.0.1:8123 --dry-run --log-level DEBUG
    """
    import signal
    import sys
    import threading

    from tempctl.daemon.fleet import daemon_extras
    from tempctl.daemon.fleet import scorecard as fleet_scorecard
    from tempctl.daemon.loop import Daemon
    from tempctl.daemon.notify import Notifier

    settings = settings_from_cli(kwargs)
    check_metrics_host(settings, allow_remote)
    _setup_logging(settings.log_level)
    eventlog = _open_log(settings.db, lock=True)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    notifier = Notifier()
    try:
        extras = daemon_extras(settings)  # metrics endpoint, alerts, retention job
    except OSError as e:
        notifier.close()
        eventlog.close()
        raise click.ClickException(
            f"metrics endpoint {settings.metrics_host}:{settings.metrics_port}: {e.strerror or e}"
        ) from None
    bridge = None
    if settings.mqtt_url:  # Home Assistant over MQTT; connects in the background
        from tempctl.mqtt.bridge import bridge_from_settings

        bridge = bridge_from_settings(settings, scorecard=fleet_scorecard(extras, settings))
        extras.observers.append(bridge)
        extras.maintenance.append((0.0, bridge.maintain))
    try:
        daemon = Daemon(
            settings,
            eventlog=eventlog,
            notifier=notifier,
            stop=stop,
            observers=extras.observers,
            maintenance=extras.maintenance,
        )
        extras.attach(daemon.devices)
        if bridge is not None:
            bridge.attach(daemon)
            bridge.start()
        code = daemon.run()
    finally:
        if bridge is not None:
            bridge.close()
        extras.close()
        notifier.close()
        eventlog.close()
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
@json_option()
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

    from tempctl.cli.offline import NotALog, require_log
    from tempctl.store.status import device_status, format_status

    settings = settings_from_cli(kwargs, require_devices=False)
    if not Path(settings.db).exists():
        raise NotALog(f"{settings.db}: no such tempctl log (set TEMPCTL_DB or --db)")
    require_log(settings.db)
    eventlog = _open_log(settings.db, read_only=True)
    now = int(time.time() * 1000)
    rows = [device_status(eventlog.conn, d, now) for d in eventlog.devices()]
    eventlog.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    elif not rows:
        click.echo("no devices in the log yet")
    else:
        click.echo("\n\n".join(format_status(r) for r in rows))


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
@json_option()
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

    from tempctl.cli.offline import NotALog, require_log
    from tempctl.store.retention import min_keep_ms, prune

    settings = settings_from_cli(kwargs, require_devices=False)
    if settings.retention_days <= 0:
        raise SettingsError(
            "TEMPCTL_RETENTION_DAYS (not set): give the days of raw readings "
            "to keep with --retention-days or TEMPCTL_RETENTION_DAYS"
        )
    if not Path(settings.db).exists():
        raise NotALog(f"{settings.db}: no such tempctl log (set TEMPCTL_DB or --db)")
    require_log(settings.db)  # an empty or foreign file is not made a log by pruning it
    eventlog = _open_log(settings.db, create=False)
    now = int(time.time() * 1000)
    batch = None if settings.dry_run or batch_rows == 0 else batch_rows
    total = {"folded": 0, "minutes": 0, "devices": 0}
    try:
        while True:
            s = prune(
                eventlog,
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
            eventlog.vacuum()
    except sqlite3.Error as e:  # locked for too long, disk full, ...
        raise click.ClickException(f"{settings.db}: {e}") from None
    finally:
        eventlog.close()
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
