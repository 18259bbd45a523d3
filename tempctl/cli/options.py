"""Options that several commands share, written once as decorators (as sqlite-utils does).

The same flag then has the same name, type, metavar and default on every command;
only the help text may say what it means for that command.
"""

from __future__ import annotations

import click

__all__ = [
    "allow_remote_option",
    "device_option",
    "host_option",
    "json_option",
    "log_argument",
    "scale_option",
    "scenario_option",
    "seed_option",
    "set_option",
    "simulation_options",
    "time_option",
]


# --- servers: emulate, ui ------------------------------------------------------

host_option = click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on; loopback only unless --allow-remote.",
)


def allow_remote_option(why: str, host_flag: str = "--host"):
    """--allow-remote; ``why`` says what is at risk beyond this machine."""
    return click.option(
        "--allow-remote", is_flag=True, help=f"Allow a non-loopback {host_flag}. {why}"
    )


# --- scenarios: emulate, demo, simulate, tune -------------------------------------

SCENARIO_HELP = "Ambient scenario: a name in replay/scenarios or a .toml file."


def scenario_option(default: str | None = "heatwave", help: str = SCENARIO_HELP):
    return click.option(
        "--scenario",
        default=default,
        show_default=default is not None,
        metavar="NAME|FILE",
        help=help,
    )


def scale_option(default: float, help: str = "Run plant time K times faster than real time."):
    return click.option(
        "--scale",
        type=click.FloatRange(min=0, min_open=True),
        default=default,
        show_default=True,
        metavar="K",
        help=help,
    )


def seed_option(help: str):
    return click.option("--seed", type=int, default=0, show_default=True, help=help)


def simulation_options(days_help: str = "Simulated days [default: the scenario's length]."):
    """--days and --poll: how long a simulation runs and how often it polls."""

    def decorator(fn):
        fn = click.option(
            "--poll",
            type=click.FloatRange(min=0.2),
            default=5.0,
            show_default=True,
            metavar="S",
            help="Seconds between polls in simulation (CHECK_INTERVAL).",
        )(fn)
        return click.option(
            "--days",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            metavar="N",
            help=days_help,
        )(fn)

    return decorator


# --- logs and settings: replay, fit, tune, simulate ---------------------------------


def log_argument(required: bool = True):
    """The DB argument: an existing tempctl log."""
    return click.argument("db", type=click.Path(exists=True, dir_okay=False), required=required)


def device_option(help: str):
    return click.option("--device", metavar="NAME", help=help)


def time_option(name: str):
    return click.option(
        name,
        metavar="ISO|MS",
        default=None,
        help="UTC date/time (2026-01-01T06:00) or epoch milliseconds.",
    )


def set_option(help: str):
    """--set KEY=VALUE (repeatable), with the names of the configuration."""
    return click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE", help=help)


def json_option(instead_of: str = "text"):
    return click.option(
        "--json", "as_json", is_flag=True, help=f"Print JSON instead of {instead_of}."
    )
