"""tempctl's command line: a thin click layer over the library modules.

Each command parses options, calls one or two library functions and prints.
Sections are marked by feature so the command list stays easy to scan.
"""

from __future__ import annotations

import click

from tempctl import __version__
from tempctl.cli.options import json_option
from tempctl.config import (
    BY_ATTR,
    FIELDS,
    ConfigError,
    Settings,
    describe,
    load_settings,
)

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


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


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
    if field.deprecated:  # as_env leaves these out: they follow the setting that replaced them
        default = f"that of {BY_ATTR[field.deprecated].flag}"
    else:
        default = Settings().as_env().get(field.env, "none, required by run") or '""'
    help_text = f"{field.doc} [env {field.env}; default: {default}]"
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
@json_option("a table")
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
