"""`pvc cluster key ...`: the API keys and their roles (admin keys only). docs/security.md, "API keys"."""

from __future__ import annotations

import click

from pvc.cli.client import from_context, path
from pvc.cli.output import ago, emit, format_option, table
from pvc.config.choices import API_ROLES


@click.group()
def key() -> None:
    """API keys: list them, add one with a role, revoke or restore one (needs an admin key)."""


@key.command("list")
@format_option
def list_keys(fmt: str) -> None:
    """Every key: name, role, who owns it (config: cluster.toml; derived: the initial key; api: added here)."""
    data = from_context().get("/cluster/keys")
    rows = [(k["name"], k["role"], k["owner"], ago(k["created"]), "revoked" if k["revoked"] else "") for k in data]
    emit(data, fmt, lambda _: table(["name", "role", "owner", "age", "state"], rows))


@key.command()
@click.argument("name")
@click.option("--role", type=click.Choice(API_ROLES), required=True, help="What the key may do.")
@format_option
def add(name: str, role: str, fmt: str) -> None:
    """Make the key NAME with ROLE and print it: this once only (the cluster keeps its digest)."""
    data = from_context().post("/cluster/keys", {"name": name, "role": role})
    if fmt != "table":
        emit(data, fmt, str)
        return
    click.echo(data["key"])
    click.echo(
        f"made API key '{data['name']}' ({data['role']}): the line above is shown only now; give it with "
        f"`pvc connection add ... --key-file FILE`",
        err=True,
    )


@key.command()
@click.argument("name")
def revoke(name: str) -> None:
    """Revoke the key NAME at once. A key added here is deleted; a key of cluster.toml and the initial key are marked
    revoked, and `pvc cluster key restore NAME` brings them back."""
    data = from_context().delete(path("cluster", "keys", name))
    click.echo(f"revoked API key '{data['name']}' ({data['role']}, {data['owner']})")


@key.command()
@click.argument("name")
def restore(name: str) -> None:
    """Undo the revocation of a key of cluster.toml, or of the initial key."""
    data = from_context().post(path("cluster", "keys", name, "restore"), {})
    click.echo(f"restored API key '{data['name']}' ({data['role']}, {data['owner']})")
