"""tempctl replay, simulate, fit, tune: offline tools over logs and scenarios."""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from tempctl.cli.base import SettingsError, cli
from tempctl.cli.options import (
    device_option,
    json_option,
    log_argument,
    scenario_option,
    seed_option,
    set_option,
    simulation_options,
    time_option,
)
from tempctl.config import ConfigError, Settings

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


@contextmanager
def _bar(length: int, label: str):
    """A progress bar's ``update`` on a terminal (stderr), else a no-op; nothing is printed
    when stderr is not a TTY, so pipes and --json output stay clean."""
    if not sys.stderr.isatty() or length <= 0:
        yield lambda n: None
        return
    with click.progressbar(
        length=length, label=label, file=sys.stderr, show_pos=True, show_percent=True
    ) as bar:
        yield bar.update


def _count_readings(conn, device, run_id, since_ms, until_ms) -> int:
    """Readings in range, the length of the replay's progress bar."""
    sql = "SELECT count(*) FROM readings WHERE ts_ms >= ? AND ts_ms <= ?"
    args: list = [
        since_ms if since_ms is not None else -(2**62),
        until_ms if until_ms is not None else 2**62,
    ]
    if device is not None:
        sql += " AND device = ?"
        args.append(device)
    if run_id is not None:
        sql += " AND run_id = ?"
        args.append(run_id)
    return conn.execute(sql, args).fetchone()[0]


class NotALog(click.ClickException):
    """The file given is no tempctl log (empty, not SQLite, someone else's): bad input, so
    ``Error: <one line>`` and exit status 2, never a traceback (issue 23.6)."""

    exit_code = 2


def require_log(path) -> None:
    """Exit 2 unless ``path`` is a tempctl log with something in it."""
    import sqlite3

    from tempctl.store.eventlog import LogError, require_log

    try:
        require_log(path)
    except (LogError, sqlite3.Error) as e:
        raise NotALog(str(e)) from None


def _read_log(path):
    """A tempctl log opened for reading (refuses other files, exit 2)."""
    import sqlite3

    require_log(path)
    try:
        return sqlite3.connect(path)
    except sqlite3.Error as e:
        raise NotALog(f"{path}: {e}") from None


@cli.command()
@log_argument()
@device_option("Only this device.")
@click.option("--run", "run_id", type=int, metavar="ID", help="Only this run (runs.id).")
@time_option("--since")
@time_option("--until")
@click.option(
    "--check",
    is_flag=True,
    help="Reproduce the recorded decisions exactly (the default without --set).",
)
@set_option("Counterfactual: replay with this setting changed (repeatable).")
@json_option()
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

    from tempctl.offline import counterfactual as cfr
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
        total = _count_readings(conn, device, run_id, since_ms, until_ms)
        if not assignments:
            with _bar(total, "replay --check") as update:
                result = rp.check(
                    conn,
                    device=device,
                    run_id=run_id,
                    since_ms=since_ms,
                    until_ms=until_ms,
                    progress=update,
                )
            click.echo(
                json.dumps(result.to_dict(), indent=2) if as_json else rp.format_check(result)
            )
            sys.exit(0 if result.ok else 1)
        _, overrides = _with_sets(Settings(), assignments)
        with _bar(total, "replay --set") as update:
            report = cfr.counterfactual(
                conn,
                overrides,
                device=device,
                run_id=run_id,
                since_ms=since_ms,
                until_ms=until_ms,
                progress=update,
            )
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    finally:
        conn.close()
    click.echo(json.dumps(report, indent=2) if as_json else cfr.format_counterfactual(report))


@cli.command()
@scenario_option()
@click.option(
    "--policy",
    "policies",
    multiple=True,
    metavar="tempctl|levels|seed|fixed:MHZ",
    help="Who sets the frequency (repeatable; default tempctl). levels is tempctl with "
    "TEMPCTL_LAW=levels; seed:S polls the original script every S seconds.",
)
@set_option("A setting for the run, e.g. TEMP_THRESHOLD=62 (repeatable).")
@simulation_options()
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
@json_option("a table")
@seed_option("Seed for sensor and hashrate noise.")
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
    import math

    from tempctl.sim.scenario import ScenarioError, load_scenario
    from tempctl.sim.simulate import PlotUnavailable, format_report
    from tempctl.sim.simulate import simulate as run_simulation
    from tempctl.store.eventlog import LogError

    settings, _ = _with_sets(Settings(), assignments)
    try:
        scn = load_scenario(scenario)
        specs = list(policies) or ["tempctl"]
        hours = math.floor((days * 24.0) if days else scn.duration_s / 3600.0)
        with _bar(hours * len(specs), "simulated hours") as update:
            report = run_simulation(
                scn,
                specs,
                settings,
                days=days,
                poll_s=poll,
                seed=seed,
                db=db,
                plot_path=plot,
                progress=update,
            )
    except PlotUnavailable as e:
        raise click.BadParameter(str(e), param_hint="--plot") from None
    except (ScenarioError, LogError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))


@cli.command()
@log_argument()
@device_option("Only this device [default: each one].")
@time_option("--since")
@time_option("--until")
@json_option()
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
        lo = parse_time(since) if since else None
        hi = parse_time(until) if until else None
        with _bar(ft.FIT_STEPS * len(devices), "fit") as update:
            fits = [ft.fit_device(conn, d, lo, hi, progress=update) for d in devices]
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
@log_argument(required=False)
@scenario_option(None, help="Judge candidates by simulation in this scenario instead of on a log.")
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
@set_option("A fixed setting for every candidate (repeatable).")
@device_option("The device in DB [needed when it has several].")
@simulation_options("Simulated days per candidate [default: the scenario's length].")
@seed_option("Seed for noise and --random.")
@json_option()
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

    from tempctl.offline import tune as tn

    if (db is None) == (scenario is None):
        raise click.UsageError("give either a log DB or --scenario")
    try:
        axes = [tn.parse_grid(g) for g in grids]
        cands = tn.candidates(axes, random_n, seed)
    except ConfigError as e:
        raise SettingsError(str(e)) from None
    source = _tune_source(db, scenario, assignments, device, days, poll, seed)
    with _bar(len(cands) + 1, "candidates") as update:
        report = tn.tune(source, cands, jobs=jobs, progress=update)
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
    from tempctl.offline.counterfactual import response_from_fit
    from tempctl.offline.fit import FitError, fit_device
    from tempctl.offline.replay import select_runs, settings_for

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
