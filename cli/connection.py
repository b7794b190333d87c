"""`pvc connection ...`: the connection profiles (API address, key, TLS) this client uses."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import click

from pvc.cli.errors import Failure
from pvc.cli.names import connection_names
from pvc.cli.output import emit, format_option, table
from pvc.cli.profiles import (
    DEFAULT_PORT,
    Connection,
    build_url,
    check_name,
    check_url,
    load,
    mask,
    profiles_path,
    save,
)


@click.group()
def connection() -> None:
    """Connection profiles: which cluster API to talk to, with which key."""


def _key_from_file(path: str) -> str:
    try:
        key = (sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")).strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"cannot read the key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not key:
        raise Failure(f"the key file {path} is empty")
    return key


@dataclass(frozen=True)
class FromConfig:
    """What a cluster.toml says about reaching its API."""

    address: str  # the upstream floating IP
    port: int
    tls: bool
    key: str  # the initial API key
    ca_pem: str | None  # the cluster CA, when the API serves the certificate it issues


def _from_cluster_file(path: str) -> FromConfig:
    from pvc.config.load import load as load_config
    from pvc.config.pki import ca_pem
    from pvc.config.secrets import initial_api_key, read_join_key

    result = load_config(path)
    if not result.valid or result.config is None:
        first = result.errors[0].format(path) if result.errors else path
        raise Failure(f"{path} is not a valid cluster.toml: {first} (see `pvc config validate {path}`)")
    cfg = result.config
    try:
        join_key = read_join_key(cfg, Path(path).resolve().parent)
    except ValueError as exc:
        raise Failure(str(exc)) from None
    own_certificate = cfg.api.tls_cert_file is not None  # the administrator's: verified as they say (--ca-file)
    return FromConfig(
        address=str(cfg.network.upstream.floating_ip),
        port=cfg.api.port,
        tls=not cfg.api.insecure_http,
        key=initial_api_key(join_key),
        ca_pem=None if cfg.api.insecure_http or own_certificate else ca_pem(join_key, cfg),
    )


@connection.command()
@click.argument("name")
@click.option("--address", help="Host name or IP address of the API (or a full URL: https://host:port).")
@click.option("--port", type=click.IntRange(1, 65535), help=f"API port  [default: {DEFAULT_PORT}]")
@click.option("--key", help="API key (X-Api-Key).")
@click.option(
    "--key-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    help="Read the API key from this file (- for stdin).",
)
@click.option("--tls/--no-tls", default=None, help="Use https  [default: --tls, as the API's default]")
@click.option("--insecure", is_flag=True, help="Do not verify the API's TLS certificate.")
@click.option(
    "--ca-file", type=click.Path(exists=True, dir_okay=False), help="Verify the API's certificate with this CA."
)
@click.option(
    "--from-config",
    "cluster_file",
    type=click.Path(dir_okay=False),
    help="Take the address (the upstream floating IP), port, TLS, the cluster CA (pinned) and the initial API key "
    "from a cluster.toml.",
)
@click.option("--proxy", is_flag=True, help="Go through the proxy $https_proxy / $http_proxy name (default: never).")
@click.option("--description", default="", help="A note shown by `pvc connection list`.")
@click.option("--default", "make_default", is_flag=True, help="Make it the default connection.")
@click.option("--replace", is_flag=True, help="Replace an existing connection of this name.")
def add(
    name: str,
    address: str | None,
    port: int | None,
    key: str | None,
    key_file: str | None,
    tls: bool | None,
    insecure: bool,
    ca_file: str | None,
    cluster_file: str | None,
    proxy: bool,
    description: str,
    make_default: bool,
    replace: bool,
) -> None:
    """Add the connection NAME. The first connection becomes the default."""
    if why := check_name(name):
        raise click.BadParameter(why, param_hint="NAME")
    if key is not None and key_file is not None:
        raise click.UsageError("give the key with --key or --key-file, not both")
    ca_pem = None
    if cluster_file is not None:
        found = _from_cluster_file(cluster_file)
        address = address or found.address
        port = port or found.port
        tls = found.tls if tls is None else tls
        key = key if key is not None or key_file is not None else found.key
        ca_pem = found.ca_pem if tls and ca_file is None and not insecure else None
    if not address:
        raise click.UsageError("--address is required (or --from-config FILE)")
    if "://" in address and (port is not None or tls is not None) and cluster_file is None:
        raise click.UsageError("--address is a URL: give the port and scheme in it, not with --port or --tls")
    url = build_url(address, port or DEFAULT_PORT, tls is not False)
    if why := check_url(url):
        raise click.BadParameter(why, param_hint="--address")
    if key_file is not None:
        key = _key_from_file(key_file)
    profiles = load()
    if name in profiles.connections and not replace:
        raise Failure(f"connection '{name}' exists: pass --replace to replace it")
    profiles.connections[name] = Connection(
        name=name,
        url=url,
        key=key or "",
        verify=not insecure,
        ca_file=str(Path(ca_file).resolve()) if ca_file else None,
        ca_pem=ca_pem,
        proxy=proxy,
        description=description,
    )
    if make_default or profiles.default is None:
        profiles.default = name
    path = save(profiles)
    notes = []
    if profiles.default == name:
        notes.append("default")
    if not key:
        notes.append("no API key")
    if insecure:
        notes.append("TLS not verified")
    elif ca_pem:
        notes.append("cluster CA pinned")
    elif url.startswith("http:"):
        notes.append("plain http: the key crosses the network in clear")
    click.echo(f"added connection '{name}': {url}{' (' + ', '.join(notes) + ')' if notes else ''} to {path}")


@connection.command("list")
@click.option("--show-keys", is_flag=True, help="Show the API keys instead of masking them.")
@format_option
def list_connections(show_keys: bool, fmt: str) -> None:
    """The connection profiles; the default is marked with *."""
    profiles = load()
    data = [
        {
            "name": c.name,
            "default": c.name == profiles.default,
            "url": c.url,
            "key": c.key if show_keys else mask(c.key),
            "verify": c.verify,
            "ca_file": c.ca_file,
            "ca_pinned": c.ca_pem is not None,
            "description": c.description,
        }
        for c in sorted(profiles.connections.values(), key=lambda c: c.name)
    ]

    def render(rows: list[dict]) -> str:
        if not rows:
            return f"no connections in {profiles_path()}: add one with `pvc connection add`"
        return table(
            ["", "name", "url", "key", "tls verify", "description"],
            [
                (
                    "*" if r["default"] else "",
                    r["name"],
                    r["url"],
                    r["key"],
                    _verify_cell(r) if r["url"].startswith("https") else "-",
                    r["description"],
                )
                for r in rows
            ],
        )

    emit(data, fmt, render)


def _verify_cell(row: dict) -> str:
    if not row["verify"]:
        return "no"
    if row["ca_pinned"]:
        return "cluster ca"
    return "ca " + row["ca_file"] if row["ca_file"] else "system cas"


@connection.command()
@click.argument("name", shell_complete=connection_names)
def remove(name: str) -> None:
    """Remove the connection NAME."""
    profiles = load()
    if name not in profiles.connections:
        raise Failure(f"no connection named '{name}'")
    del profiles.connections[name]
    note = ""
    if profiles.default == name:
        profiles.default = None
        if profiles.connections:
            note = " (it was the default: choose another with `pvc connection default NAME`)"
    save(profiles)
    click.echo(f"removed connection '{name}'{note}")


@connection.command("default")
@click.argument("name", shell_complete=connection_names)
def make_default(name: str) -> None:
    """Make the connection NAME the default."""
    profiles = load()
    if name not in profiles.connections:
        raise Failure(f"no connection named '{name}'")
    profiles.default = name
    save(profiles)
    click.echo(f"default connection: '{name}'")
