"""`pvc config ...`: offline work on cluster.toml files. Imports no cluster client library."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:  # the commands import pvc.config when they run, so `pvc --help` does not
    from pvc.config.load import Problem


@click.group()
def config() -> None:
    """Validate, create and inspect cluster.toml files (offline; no cluster needed)."""


@config.command()
@click.argument("file", type=click.Path(path_type=str))
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def validate(file: str, strict: bool, fmt: str) -> None:
    """Check FILE against the schema and the cross-field rules.

    Exit status: 0 valid, 1 invalid, 2 usage error. Each error is one line FILE:LINE:COL: key: message.
    """
    from pvc.config.load import load

    result = load(file)
    errors = result.errors + (result.warnings if strict else [])
    if fmt == "json":
        click.echo(json.dumps(result.as_json(strict=strict), indent=2))
        sys.exit(1 if errors else 0)
    for problem in result.errors:
        click.echo(problem.format(file))
    for problem in result.warnings:
        if strict:
            click.echo(problem.format(file) + " (warning; an error with --strict)")
        else:
            click.echo(_warning(problem, file), err=True)
    if errors:
        sys.exit(1)
    cfg = result.config
    assert cfg is not None
    click.echo(
        f"{file}: valid: cluster '{cfg.cluster.name}', {len(cfg.nodes)} node(s), "
        f"{len(cfg.coordinators)} coordinator(s), {len(result.warnings)} warning(s)"
    )


def _warning(problem: Problem, file: str) -> str:
    where = f"{file}:{problem.line}:{problem.column}" if problem.line is not None else file
    key = f" {problem.key}:" if problem.key else ""
    return f"{where}:{key} warning: {problem.message}"


@config.command()
@click.option("--nodes", type=click.IntRange(1, 64), default=3, show_default=True, help="Number of nodes.")
@click.option("--lab", is_flag=True, help="Describe the virtual hardware of `pvc-lab` instead of real servers.")
@click.option("--name", default=None, help="Cluster name (default: pvc1, or lab with --lab).")
@click.option("-o", "--output", default="-", show_default=True, help="File to write; - for standard output.")
@click.option("--force", is_flag=True, help="Overwrite OUTPUT if it exists.")
def init(nodes: int, lab: bool, name: str | None, output: str, force: bool) -> None:
    """Write a valid, commented cluster.toml with a fresh join key."""
    from pvc.config.example import Plan, render
    from pvc.config.secrets import new_join_key

    if name is not None:
        import re

        if not re.match(r"^[a-z][a-z0-9-]{0,31}$", name):
            raise click.BadParameter(
                "a-z, 0-9 and '-', starting with a letter, up to 32 characters", param_hint="--name"
            )
    text = render(Plan(nodes=nodes, lab=lab), new_join_key(), name=name)
    if output == "-":
        click.echo(text, nl=False)
        return
    if os.path.exists(output) and not force:
        raise click.UsageError(f"{output} exists; pass --force to overwrite it")
    try:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds the join key
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
    except OSError as exc:
        click.echo(f"pvc config init: cannot write {output}: {exc.strerror or exc}", err=True)
        sys.exit(1)
    click.echo(
        f"wrote {output} ({nodes} node(s){', lab' if lab else ''}); it holds the join key: keep it private",
        err=True,
    )


@config.command()
def schema() -> None:
    """Print the JSON Schema of cluster.toml."""
    from pvc.config.schema import ClusterFile

    doc = ClusterFile.model_json_schema(by_alias=True)
    doc = {"$schema": "https://json-schema.org/draft/2020-12/schema", **doc, "title": "PVC cluster.toml"}
    click.echo(json.dumps(doc, indent=2))


@config.command()
@click.argument("file", type=click.Path(path_type=str))
@click.option("--node", "node_name", required=True, help="Node name as in [[nodes]].")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True)
def show(file: str, node_name: str, fmt: str) -> None:
    """Print the resolved view of one node: IPs, roles, disks, services. Secrets are redacted."""
    from pvc.config.load import load
    from pvc.config.resolve import node_view

    result = load(file)
    if not result.valid:
        for problem in result.errors:
            click.echo(problem.format(file))
        sys.exit(1)
    cfg = result.config
    assert cfg is not None
    names = [n.name for n in cfg.nodes]
    if node_name not in names:
        click.echo(f"{file}: no node '{node_name}' (nodes: {', '.join(names)})", err=True)
        sys.exit(1)
    view = node_view(cfg, node_name)
    if fmt == "json":
        click.echo(json.dumps(view, indent=2))
    else:
        import yaml

        click.echo(yaml.safe_dump(view, sort_keys=False, default_flow_style=False), nl=False)
