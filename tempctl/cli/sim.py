"""tempctl emulate: the AxeOS emulator."""

from __future__ import annotations

import click

from tempctl.cli.base import cli, is_loopback
from tempctl.cli.options import (
    allow_remote_option,
    host_option,
    scale_option,
    scenario_option,
    seed_option,
)

# --- emulator ----------------------------------------------------------------


@cli.command()
@host_option
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port of the first device (device i gets PORT+i); 0 = free ports.",
)
@scenario_option()
@scale_option(1.0)
@click.option(
    "--pace",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    metavar="SECONDS",
    help="Plant time waits for a late poll: it runs at most SECONDS (plant time) past the "
    "latest GET /api/system/info. For compressed runs (--scale) on a busy machine, where a "
    "poll scheduled late would leave the plant running unwatched for minutes.",
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
    help="BM1370, BM1368, BM1366, BM1397, BM1372, BM1373 (v2.15+) or hex "
    "[default: the scenario's].",
)
@click.option(
    "--version-label",
    metavar="TEXT",
    default=None,
    help="Report TEXT as `version` (e.g. virtual, a git hash) while behaving as --firmware.",
)
@click.option(
    "--password-file",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="HTTP Basic auth as in ESP-Miner PR #1750: the file's first line is the password; "
    'requests without it get 401 {"authRequired":1}. Writes only, unless --auth-read-required.',
)
@click.option(
    "--auth-read-required",
    is_flag=True,
    help="With --password-file: GETs need the password too (the PR's authReadRequired).",
)
@click.option(
    "--faults",
    metavar="SPEC",
    default=None,
    help="Fault injection: name=probability or bare name (always), comma-separated, "
    "e.g. timeout=0.05,5xx=0.1,reboot=0.001. Per request: timeout, 5xx, reboot, overheat, "
    "sensor_m1, sensor_0, sensor_127, wrong_types, missing, mac_change, huge, truncated, "
    "malformed, patch_ignored, patch_400, restart_fail; no_power (drops only power and "
    "coreVoltage), power_spike (reports 900 W). Lasting conditions that stop mining "
    "(bare: while named; name=p: an info request starts one for 60 plant-s): pool_down "
    "(v2.14+, fan 30 %), power_fault (v2.6+), hardware_fault (v2.14+).",
)
@seed_option("Seed for sensor noise and faults (device i uses SEED+i).")
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
@allow_remote_option("It is a fake miner: keep it off real networks.")
def emulate(
    host,
    port,
    scenario,
    scale,
    pace,
    firmware,
    asic,
    version_label,
    password_file,
    auth_read_required,
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
    GET /_emulator/state, POST /_emulator/faults, POST /_emulator/ambient and
    POST /_emulator/cooling.

    \b
    Example:
        tempctl emulate --port 8123
        tempctl emulate --scale 60 --start-hours 2 --devices 3
        tempctl emulate --firmware v2.10.1 --faults timeout=0.05,5xx=0.1 --seed 7
    """
    import signal
    import threading

    from tempctl.sim.emulator import Emulator, parse_faults
    from tempctl.sim.firmware import version_of
    from tempctl.sim.scenario import ScenarioError, load_scenario

    if not allow_remote and not is_loopback(host):
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
            version_of(firmware)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--firmware") from None
    password = None
    if password_file is not None:
        with open(password_file, encoding="utf-8") as fh:
            password = fh.readline().rstrip("\r\n")
        if not password:
            raise click.BadParameter("the file's first line is empty", param_hint="--password-file")
    try:
        scn = load_scenario(scenario)
        emu = Emulator(
            scn,
            host=host.strip("[]"),
            port=port,
            devices=devices,
            scale=scale,
            pace_s=pace,
            firmware=firmware,
            asic=asic,
            faults=faults,
            seed=seed,
            start_hours=start_hours,
            private_ip_check=private_ip_check,
            version_label=version_label,
            password=password,
            auth_read_required=auth_read_required,
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
