"""Path parameters: one declaration per parameter name, checked before any resource method runs.

Every `{name}` in a route is declared here. `@operation` checks each value before the method runs and refuses a bad
one with 400 naming the parameter and what it accepts; the OpenAPI document shows the same pattern. Pools, volumes,
snapshots, VMs (or their UUIDs) and nodes are named with the one name pattern (`pvc.config.names`), so no value
can carry ':' (qemu's `rbd:` option syntax), '/', '@', whitespace, control characters or a leading '-' into a
command line, a ZooKeeper path or a log line.

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

from pvc.config.names import NAME_MAX, NAME_PATTERN, check_name

SLASH = "\uffff"  # stands for a decoded '/' inside one path segment while Falcon routes


class PathInvalid(Exception):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PathParameter:
    what: str  # "pool name": how the value is named in a refusal
    check: Callable[[str, str], object]  # (value, what): raises ValueError saying why
    schema: dict[str, Any]
    description: str


def _name(what: str, description: str) -> PathParameter:
    schema = {"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": NAME_MAX}
    return PathParameter(what, check_name, schema, description)


ID_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"
_ID_RE = re.compile(ID_PATTERN)
OSD_PATTERN = r"^(osd\.)?[0-9]{1,9}$"
_OSD_RE = re.compile(OSD_PATTERN)
VNI_PATTERN = r"^[0-9]{1,8}$"
_VNI_RE = re.compile(VNI_PATTERN)
MAC_PATTERN = r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$"
_MAC_RE = re.compile(MAC_PATTERN)


def _matching(regex: re.Pattern[str], rule: str) -> Callable[[str, str], object]:
    def check(value: str, what: str) -> str:
        if regex.fullmatch(value):
            return value
        raise ValueError(f"the {what} {value!r} is not valid ({rule})")

    return check


PATH_PARAMETERS: dict[str, PathParameter] = {
    "pool": _name("pool name", "a pool's name"),
    "volume": _name("volume name", "a volume's name"),
    "snapshot": _name("snapshot name", "a snapshot's name"),
    "vm": _name("VM name or UUID", "a VM's name or UUID"),
    "node": _name("node name", "a node's name"),
    "description": _name("ACL rule name", "an ACL rule's name (its description)"),
    "vni": PathParameter(
        "VNI", _matching(_VNI_RE, "a number"), {"type": "string", "pattern": VNI_PATTERN}, "a network's VNI"
    ),
    "mac": PathParameter(
        "MAC address",
        _matching(_MAC_RE, "six hex pairs joined by ':' or '-'"),
        {"type": "string", "pattern": MAC_PATTERN},
        "a MAC address",
    ),
    "osd": PathParameter(
        "OSD id",
        _matching(_OSD_RE, "a number, or osd.N"),
        {"type": "string", "pattern": OSD_PATTERN},
        "an OSD's id: N or osd.N",
    ),
    "task_id": PathParameter(
        "task id",
        _matching(_ID_RE, "letters, digits, '_', '.' and '-', up to 128"),
        {"type": "string", "pattern": ID_PATTERN},
        "a task's id",
    ),
    "fault_id": PathParameter(
        "fault id",
        _matching(_ID_RE, "letters, digits, '_', '.' and '-', up to 128"),
        {"type": "string", "pattern": ID_PATTERN},
        "a fault's id",
    ),
}


def declared(name: str) -> PathParameter:
    try:
        return PATH_PARAMETERS[name]
    except KeyError:
        raise KeyError(f"path parameter '{name}' is not declared in pvc.api.paths.PATH_PARAMETERS") from None


def check_path(params: dict[str, Any]) -> None:
    """Refuse (PathInvalid, 400) the first path parameter whose value its declaration does not accept."""
    for name, value in params.items():
        param = declared(name)
        text = str(value).replace(SLASH, "/")
        try:
            param.check(text, param.what)
        except ValueError as exc:
            raise PathInvalid(f"path parameter '{name}': {exc}", name) from None


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
