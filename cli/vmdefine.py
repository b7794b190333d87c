"""What `pvc vm define` and `pvc vm modify` send: a VM definition built from command-line options, or read from a
file holding JSON, YAML or a libvirt domain XML. The API validates it (and imports XML through its allowlist); the
CLI only shapes it, so that the rules stay in one place.
"""

from __future__ import annotations

import json
from typing import Any

import click

from pvc.cli.errors import Failure
from pvc.config.sizes import parse_size

MIB = 1024**2
DISK_KEYS = ("device", "bus", "cache", "discard", "size", "ro")
NIC_KEYS = ("mac", "model")


def memory_mib(text: str) -> int:
    """`2048` (MiB), or a size with a unit (`2G`, `512M`) that is a whole number of MiB."""
    if text.strip().isdigit():
        return int(text)
    try:
        size = parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if size % MIB:
        raise click.BadParameter(f"'{text}' is not a whole number of MiB")
    return size // MIB


def _pairs(text: str, keys: tuple[str, ...], what: str) -> tuple[str, dict[str, str]]:
    """`first,key=value,flag` → ("first", {key: value, flag: ""})."""
    first, *rest = text.split(",")
    options: dict[str, str] = {}
    for item in rest:
        key, sep, value = item.partition("=")
        key = key.strip()
        if key not in keys:
            raise click.BadParameter(f"{what} '{text}': unknown option '{key}' (known: {', '.join(keys)})")
        options[key] = value.strip() if sep else ""
    return first.strip(), options


def disk(text: str) -> dict[str, Any]:
    """`pool/volume[,device=cdrom][,bus=scsi][,cache=writeback][,discard=ignore][,size=20G][,ro]`."""
    volume, options = _pairs(text, DISK_KEYS, "--disk")
    out: dict[str, Any] = {"volume": volume}
    for key, value in options.items():
        if key == "ro":
            out["read_only"] = value.lower() not in ("no", "false", "0")
        elif key == "size":
            out["size"] = int(value) if value.isdigit() else value
        else:
            out[key] = value
    return out


def nic(text: str) -> dict[str, Any]:
    """`VNI[,mac=52:54:00:12:34:56][,model=e1000e]`."""
    network, options = _pairs(text, NIC_KEYS, "--nic")
    if not network.isdigit():
        raise click.BadParameter(f"--nic '{text}': the network is its VNI, a number")
    return {"network": int(network), **options}


def node_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """`n1,n2` → ["n1", "n2"]; an empty string → [] (no limit)."""
    if value is None:
        return None
    return [n.strip() for n in value.split(",") if n.strip()]


def from_options(options: dict[str, Any]) -> dict[str, Any]:
    """The definition the options describe (only what was given: the API fills in the defaults)."""
    if not options.get("name"):
        raise click.UsageError("give --name (and --memory), or --file with a definition or a domain XML")
    if options.get("memory") is None:
        raise click.UsageError("give --memory (MiB, or like 2G)")
    d: dict[str, Any] = {"name": options["name"], "memory_mib": options["memory"]}
    simple = {
        "description": "description",
        "vcpus": "vcpus",
        "machine": "machine",
        "firmware": "firmware",
        "cpu_model": "cpu_model",
        "graphics": "graphics",
    }
    for option, field in simple.items():
        if options.get(option) is not None:
            d[field] = options[option]
    for option, field in (("boot", "boot"), ("tags", "tags")):
        if options.get(option):
            d[field] = list(options[option])
    if options.get("disks"):
        d["disks"] = [disk(text) for text in options["disks"]]
    if options.get("nics"):
        d["nics"] = [nic(text) for text in options["nics"]]
    placement = {
        k: v for k, v in (("node_limit", options.get("limit")), ("selector", options.get("selector"))) if v is not None
    }
    if options.get("autostart"):
        placement["autostart"] = True
    if placement:
        d["placement"] = placement
    migration = {
        k: v
        for k, v in (("method", options.get("method")), ("max_downtime_ms", options.get("max_downtime")))
        if v is not None
    }
    if migration:
        d["migration"] = migration
    return d


def from_file(name: str, text: str) -> dict[str, Any]:
    """The request body a file describes: `{"xml": ...}` for a domain XML (it starts with '<'), else
    `{"definition": ...}` from JSON or YAML (a `pvc vm info --format json|yaml` document gives its definition)."""
    if text.lstrip().startswith("<"):
        return {"xml": text}
    import yaml  # JSON is YAML; loaded only here

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise Failure(f"{name}:{where}: not JSON, YAML or a domain XML: {problem}") from None
    if isinstance(data, dict) and isinstance(data.get("definition"), dict):
        data = data["definition"]
    if not isinstance(data, dict):
        raise Failure(f"{name}: holds {type(data).__name__ if data is not None else 'nothing'}, not a VM definition")
    return {"definition": json.loads(json.dumps(data, default=str))}  # YAML dates and the like: as their text


def read(file: Any) -> str:
    try:
        return str(file.read())
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"cannot read {file.name}: {getattr(exc, 'strerror', None) or exc}") from None
