"""Load and validate a cluster.toml: read → decode → parse → schema → cross-field checks.

Every failure, whatever the input, becomes a Problem with the key path, line and column it concerns and a message
that says what is accepted. Nothing here raises for bad input.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from pvc.config.checks import Finding, run_checks
from pvc.config.locate import KeyPath, SourceMap
from pvc.config.schema import JOIN_KEY_RE, SCHEMA_VERSION, ClusterFile
from pvc.config.types import toml_type

MAX_BYTES = 4 * 1024 * 1024
_BARE = re.compile(r"^[A-Za-z0-9_-]+$")
_TOML_POS = re.compile(r"\(at line (\d+), column (\d+)\)")
_TYPE_NAMES = {
    "int_type": "an integer",
    "bool_type": "true or false",
    "string_type": "a string",
    "float_type": "a number",
    "list_type": "an array",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "dict_type": "a table",
    "literal_error": None,
}


@dataclass(frozen=True)
class Problem:
    key: str
    line: int | None
    column: int | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        del out["severity"]
        return out

    def format(self, filename: str) -> str:
        where = f"{filename}:{self.line}:{self.column}" if self.line is not None else filename
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


@dataclass
class Result:
    filename: str
    config: ClusterFile | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def valid(self) -> bool:
        return not self.errors

    def as_json(self, strict: bool = False) -> dict[str, Any]:
        errors = self.errors + (self.warnings if strict else [])
        warnings = [] if strict else self.warnings
        return {
            "valid": not errors,
            "errors": [p.as_dict() for p in errors],
            "warnings": [p.as_dict() for p in warnings],
        }


def key_string(path: Sequence[str | int]) -> str:
    """("nodes", 1, "ip", "cluster") → "nodes[1].ip.cluster"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _BARE.match(part) else '"' + part.replace("\\", "\\\\").replace('"', '\\"') + '"'
            out += f".{name}" if out else name
    return out


def load(filename: str | os.PathLike[str]) -> Result:
    """Validate the file at `filename`. Relative file references in it resolve against its folder."""
    name = os.fspath(filename)
    try:
        with open(name, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except IsADirectoryError:
        return _fail(name, "is a directory; give the path of a cluster.toml file")
    except FileNotFoundError:
        return _fail(name, "no such file")
    except PermissionError:
        return _fail(name, "permission denied")
    except OSError as exc:
        return _fail(name, f"cannot read: {exc.strerror or exc}")
    return load_bytes(data, name, base_dir=Path(name).resolve().parent)


def load_bytes(data: bytes, filename: str, base_dir: Path | None = None) -> Result:
    if len(data) > MAX_BYTES:
        return _fail(filename, f"is larger than {MAX_BYTES // 1024 // 1024} MiB; a cluster.toml is a few KiB of text")
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        return Result(
            filename,
            problems=[
                Problem(
                    "",
                    line,
                    column,
                    f"not UTF-8 text (byte 0x{data[exc.start]:02x}); a cluster.toml is TOML text",
                )
            ],
        )
    return load_text(text, filename, base_dir)


def load_text(text: str, filename: str = "cluster.toml", base_dir: Path | None = None) -> Result:
    result = Result(filename)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        result.problems.append(_syntax_problem(text, exc))
        return result
    source = SourceMap(text)
    try:
        config = ClusterFile.model_validate(raw)
    except ValidationError as exc:
        result.problems.extend(_schema_problem(err, source, raw) for err in exc.errors())
        result.problems.sort(key=_order)
        return result
    result.config = config
    result.problems.extend(_finding_problem(f, source) for f in run_checks(config))
    result.problems.extend(_file_references(config, source, base_dir))
    result.problems.sort(key=_order)
    return result


def _order(p: Problem) -> tuple[int, int]:
    return (p.line or 0, p.column or 0)


def _fail(filename: str, message: str) -> Result:
    return Result(filename, problems=[Problem("", None, None, message)])


def _syntax_problem(text: str, exc: tomllib.TOMLDecodeError) -> Problem:
    message = str(exc)
    match = _TOML_POS.search(message)
    if match:
        line, column = int(match.group(1)), int(match.group(2))
        message = message[: match.start()].strip()
    else:  # "(at end of document)"
        line = text.count("\n") + 1
        column = len(text) - (text.rfind("\n") + 1) + 1
        message = re.sub(r"\s*\(at end of document\)", " at the end of the file", message)
    # Name the last key that parsed before the error: the scanner stops where the syntax breaks.
    source = SourceMap(text)
    lines = text.split("\n")
    offset = sum(len(x) + 1 for x in lines[: line - 1]) + column - 1
    before = [(o, p) for p, o in source.offsets.items() if o <= offset]
    key = key_string(max(before)[1]) if before else ""
    return Problem(key, line, column, f"TOML syntax error: {message[0].lower() + message[1:]}")


def _schema_problem(err: Any, source: SourceMap, raw: dict[str, Any]) -> Problem:
    loc: tuple[str | int, ...] = tuple(err["loc"])
    line, column = source.locate(loc)
    return Problem(key_string(loc), line, column, _schema_message(err, loc))


def _schema_message(err: Any, loc: tuple[str | int, ...]) -> str:
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    last = loc[-1] if loc else ""
    if kind == "missing":
        if loc == ("schema",):
            return f"required key 'schema' is missing (this PVC reads schema = {SCHEMA_VERSION})"
        return f"required key '{last}' is missing"
    if kind == "extra_forbidden":
        accepted = accepted_keys(loc[:-1])
        hint = ""
        close = difflib.get_close_matches(str(last), accepted, n=1, cutoff=0.6)
        if close:
            hint = f"; did you mean '{close[0]}'?"
        return f"unknown key '{last}'{hint} (accepted here: {', '.join(accepted)})"
    if kind == "literal_error":
        if loc == ("schema",):
            return f"unsupported schema version {_show(value)}; this PVC reads schema = {SCHEMA_VERSION}"
        return f"{_show(value)} is not accepted; expected {ctx.get('expected', '')}"
    if kind in _TYPE_NAMES:
        return f"expected {_TYPE_NAMES[kind]}, got {toml_type(value)}"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    bounds = {
        "greater_than_equal": ("at least", "ge"),
        "greater_than": ("more than", "gt"),
        "less_than_equal": ("at most", "le"),
        "less_than": ("less than", "lt"),
    }
    if kind in bounds:
        word, name = bounds[kind]
        return f"{_show(value)} is out of range; it must be {word} {ctx.get(name)}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters"
    if kind == "string_pattern_mismatch":
        return f"{_show(value)} is not of the accepted form {ctx.get('pattern')}"
    return str(err["msg"])


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    if isinstance(value, (bool, int, float)):
        return str(value).lower() if isinstance(value, bool) else str(value)
    return toml_type(value)


def _finding_problem(finding: Finding, source: SourceMap) -> Problem:
    if finding.other is None:
        line, column = source.locate(finding.path)
        return Problem(key_string(finding.path), line, column, finding.message, finding.severity)
    here, here_label, there, there_label = finding.path, finding.label, finding.other, finding.other_label
    if (source.offset(there) or 0) > (source.offset(here) or 0):
        here, here_label, there, there_label = there, there_label, here, here_label
    line, column = source.locate(here)
    there_line, _ = source.locate(there)
    message = f"{finding.message}: {here_label} is also {there_label} ({key_string(there)}, line {there_line})"
    return Problem(key_string(here), line, column, message, finding.severity)


def _file_references(config: ClusterFile, source: SourceMap, base_dir: Path | None) -> list[Problem]:
    """Files the config names must exist where the node reads it; here we can only warn when they are missing."""
    refs: list[tuple[KeyPath, str]] = []
    if config.cluster.join_key_file:
        refs.append((("cluster", "join_key_file"), config.cluster.join_key_file))
    for i, node in enumerate(config.nodes):
        if node.ipmi and node.ipmi.password_file:
            refs.append((("nodes", i, "ipmi", "password_file"), node.ipmi.password_file))
    for i, key in enumerate(config.api.keys):
        if key.key_file:
            refs.append((("api", "keys", i, "key_file"), key.key_file))
    for name in ("tls_cert_file", "tls_key_file"):
        if getattr(config.api, name):
            refs.append((("api", name), getattr(config.api, name)))
    problems = []
    for path, ref in refs:
        resolved = resolve_file(ref, base_dir)
        line, column = source.locate(path)
        if not _is_file(resolved):
            problems.append(
                Problem(
                    key_string(path),
                    line,
                    column,
                    f"file '{resolved}' does not exist here; it must exist next to cluster.toml when the node boots",
                    "warning",
                )
            )
        elif path == ("cluster", "join_key_file"):
            content = resolved.read_text(errors="replace").strip()
            if not JOIN_KEY_RE.match(content):
                problems.append(
                    Problem(
                        key_string(path),
                        line,
                        column,
                        f"'{resolved}' does not hold a join key (64 lower-case hex)",
                    )
                )
    return problems


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):  # a name too long for the file system, or a NUL byte
        return False


def resolve_file(ref: str, base_dir: Path | None) -> Path:
    path = Path(ref)
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    return path


# -- schema introspection ------------------------------------------------------------------------------------


def accepted_keys(path: Sequence[str | int]) -> list[str]:
    """The keys the schema accepts in the table at `path` (for 'did you mean' hints)."""
    model = _model_at(path)
    if model is None:
        return []
    return [info.alias or name for name, info in model.model_fields.items()]


def _unwrap(tp: Any) -> Any:
    while True:
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            tp = typing.get_args(tp)[0]
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if len(args) != 1:
                return tp
            tp = args[0]
        else:
            return tp


def _model_at(path: Sequence[str | int]) -> type[BaseModel] | None:
    tp: Any = ClusterFile
    for part in path:
        tp = _unwrap(tp)
        if isinstance(part, int):
            if typing.get_origin(tp) is not list:
                return None
            tp = typing.get_args(tp)[0]
            continue
        if not (isinstance(tp, type) and issubclass(tp, BaseModel)):
            return None
        fields = {info.alias or name: info for name, info in tp.model_fields.items()}
        if part not in fields:
            return None
        tp = fields[part].annotation
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None
