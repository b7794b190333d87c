"""Path parameters: one declaration per parameter name, the only place a path value is checked.

Every `{name}` in a route is declared here. `@operation` reads each value through its declaration before the
method runs and refuses a bad one with 400 naming the parameter and what it accepts; the method receives the value
as the declaration reads it (a VNI or an OSD id as an int, a MAC address in its one spelling). The OpenAPI document
shows the same schema. Pools, volumes, snapshots, VMs (or their UUIDs) and nodes are named with the one name pattern
(`pvc.config.names`), so no value can carry ':' (qemu's `rbd:` option syntax), '/', '@', whitespace, control
characters or a leading '-' into a command line, a ZooKeeper path or a log line. A MAC address and an ACL rule's
name are read by the very types their body fields have (`pvc.config.types.Mac`, `pvc.config.schema.AclDescription`),
so what a body may create a path can name.

WSGI servers decode `%2F` into '/' before routing, so `a%2Fb` would split into two segments and reach another
route or none (404). `EncodedSlashes` routes such a request on the raw path instead, so that the value reaches
its check whole and is refused like any other bad name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import falcon
from pydantic import TypeAdapter, ValidationError

from pvc.config.names import NAME_MAX, NAME_PATTERN, check_name
from pvc.config.networks import MAX_VNI
from pvc.config.schema import AclDescription
from pvc.config.types import Mac

SLASH = "\uffff"  # stands for a decoded '/' inside one path segment while Falcon routes


class PathInvalid(Exception):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PathParameter:
    what: str  # "pool name": how the value is named in a refusal
    read: Callable[[str, str], object]  # (value, what) -> the value the method takes; ValueError saying why not
    schema: dict[str, Any]
    description: str


def _name(what: str, description: str) -> PathParameter:
    schema = {"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": NAME_MAX}
    return PathParameter(what, check_name, schema, description)


def _matching(pattern: str, rule: str, convert: Callable[[str], object] = str) -> Callable[[str, str], object]:
    regex = re.compile(pattern)

    def read(value: str, what: str) -> object:
        if regex.fullmatch(value):
            return convert(value)
        raise ValueError(f"the {what} {value!r} is not valid ({rule})")

    return read


def _typed(what: str, tp: Any, description: str) -> PathParameter:
    """A parameter read by the type of the body field that creates what it names: its check, its schema."""
    adapter: TypeAdapter[str] = TypeAdapter(tp)
    schema = {k: v for k, v in adapter.json_schema().items() if k in ("type", "pattern")}
    regex = re.compile(schema["pattern"])

    def read(value: str, what: str) -> object:
        try:
            parsed = adapter.validate_python(value)
        except ValidationError as exc:
            raise ValueError(str(exc.errors()[0]["msg"]).removeprefix("Value error, ")) from None
        if not regex.fullmatch(value):  # what the type would tidy (spaces) is outside the documented pattern
            raise ValueError(f"the {what} {value!r} does not match {schema['pattern']}")
        return parsed

    return PathParameter(what, read, schema, description)


def _vni(value: str, what: str) -> int:
    if value.isascii() and value.isdigit() and len(value) <= 8 and 1 <= int(value) <= MAX_VNI:
        return int(value)
    raise ValueError(f"{value!r} is not a {what} (a number 1-{MAX_VNI})")


ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
ID_RULE = "letters, digits, '_', '.' and '-', up to 128"
OSD_PATTERN = r"^(osd\.)?[0-9]{1,9}$"


def _osd_number(value: str) -> int:
    return int(value.removeprefix("osd."))


PATH_PARAMETERS: dict[str, PathParameter] = {
    "pool": _name("pool name", "a pool's name"),
    "volume": _name("volume name", "a volume's name"),
    "snapshot": _name("snapshot name", "a snapshot's name"),
    "vm": _name("VM name or UUID", "a VM's name or UUID"),
    "node": _name("node name", "a node's name"),
    "key_name": _name("API key name", "an API key's name"),
    "image": _name("image name", "a base image's name"),
    "template": _name("template name", "a system, network or storage template's name"),
    "userdata": _name("userdata name", "a userdata document's name"),
    "profile": _name("profile name", "a provisioner profile's name"),
    "ova": _name("OVA name", "an imported OVA's name"),
    "vni": PathParameter(
        "VNI",
        _vni,
        {"type": "integer", "minimum": 1, "maximum": MAX_VNI},
        "a network's VNI (a bridged network's VLAN id)",
    ),
    "mac": _typed("MAC address", Mac, "a NIC's MAC address, its pairs joined by ':' or '-'"),
    "description": _typed("ACL rule name", AclDescription, "an ACL rule's name (its description)"),
    "osd": PathParameter(
        "OSD id",
        _matching(OSD_PATTERN, "a number, or osd.N", _osd_number),
        {"type": "string", "pattern": OSD_PATTERN},
        "an OSD's id: N or osd.N",
    ),
    "task_id": PathParameter(
        "task id", _matching(ID_PATTERN, ID_RULE), {"type": "string", "pattern": ID_PATTERN}, "a task's id"
    ),
    "fault_id": PathParameter(
        "fault id", _matching(ID_PATTERN, ID_RULE), {"type": "string", "pattern": ID_PATTERN}, "a fault's id"
    ),
}


def declared(name: str) -> PathParameter:
    try:
        return PATH_PARAMETERS[name]
    except KeyError:
        raise KeyError(f"path parameter '{name}' is not declared in pvc.api.paths.PATH_PARAMETERS") from None


def check_path(params: dict[str, Any]) -> dict[str, Any]:
    """Each path parameter as its declaration reads it; PathInvalid (400) for the first one it does not accept."""
    read: dict[str, Any] = {}
    for name, value in params.items():
        param = declared(name)
        text = str(value).replace(SLASH, "/")
        try:
            read[name] = param.read(text, param.what)
        except ValueError as exc:
            raise PathInvalid(f"path parameter '{name}': {exc}", name) from None
    return read


def openapi_parameter(name: str) -> dict[str, Any]:
    param = declared(name)
    return {"name": name, "in": "path", "required": True, "description": param.description, "schema": param.schema}


class EncodedSlashes:
    """Falcon middleware: a request whose raw path has a percent-encoded '/' inside a segment is routed with that
    segment whole (its '/' stands in as SLASH until `check_path` refuses it)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        raw = req.env.get("RAW_URI") or req.env.get("REQUEST_URI")
        if not raw or "%2f" not in raw.lower():
            return
        path = urlsplit(raw).path if "://" in raw else raw.split("?", 1)[0]
        if path.startswith("/"):
            routed = "/".join(unquote(segment).replace("/", SLASH) for segment in path.split("/"))
            req.path = routed.rstrip("/") or "/"
