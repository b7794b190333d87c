"""Operations and the OpenAPI 3.1 document, from one declaration.

Each resource method is decorated with `@operation(...)`, naming its query model, body model and response model.
The decorator validates the request with those pydantic models before the method runs and serialises what it
returns; `openapi()` walks the same declarations, so the document cannot drift from the code.
"""

from __future__ import annotations

import functools
import json
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import falcon
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from pvc.api.paths import check_path, openapi_parameter

ERROR_STATUSES = {
    400: "Invalid request: the body, a query parameter or a path names something wrong",
    401: "Missing or wrong API key (header X-Api-Key)",
    404: "No such object",
    409: "Not possible in the object's current state",
    413: "The request body is larger than allowed (the detail gives the limit)",
    503: "The cluster is not ready (ZooKeeper unreachable, or not formed yet)",
}
MAX_JSON_BODY = 1024 * 1024  # bytes of a JSON request body; refused (413) above, before it is read


class RequestInvalid(Exception):
    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


class BodyTooLarge(Exception):
    """A request body over its limit (413)."""


@dataclass
class Operation:
    summary: str
    response: Any = None  # a pydantic model, list[Model], or None (no body)
    status: int = 200
    query: type[BaseModel] | None = None
    body: type[BaseModel] | None = None
    errors: tuple[int, ...] = (404,)
    auth: bool = True
    tags: list[str] = field(default_factory=list)
    description: str = ""
    media_type: str = "application/json"
    request_media_type: str | None = None  # a raw request body (e.g. an upload), read by the method itself
    extra_statuses: dict[int, tuple[str, Any]] = field(default_factory=dict)  # status -> (description, model)


def _field_of(error: ErrorDetails) -> str:
    return ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"


def validation_message(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    where = _field_of(err)
    kind = err.get("type")
    if kind == "extra_forbidden":
        return f"unknown field '{where}'", where
    if kind == "missing":
        return f"required field '{where}' is missing", where
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    return f"{where}: {msg}", where


def operation(**kwargs: Any) -> Callable:
    op = Operation(**kwargs)

    def wrap(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def handler(self: object, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:
            params = check_path(params)  # each value as its declaration reads it (pvc.api.paths): a VNI is an int
            call: dict[str, Any] = {}
            if op.query is not None:
                raw = {k: v for k, v in req.params.items()}
                try:
                    call["query"] = op.query.model_validate(raw)
                except ValidationError as exc:
                    raise RequestInvalid(*validation_message(exc)) from None
            if op.body is not None:
                media = json_body(req)
                if not isinstance(media, dict):
                    raise RequestInvalid("the body must be a JSON object", "body")
                try:
                    call["body"] = op.body.model_validate(media)
                except ValidationError as exc:
                    raise RequestInvalid(*validation_message(exc)) from None
            resp.status = op.status  # the declared status, unless the method sets another (/health: 503)
            result = fn(self, req, resp, **params, **call)
            if result is not None and op.media_type == "application/json":
                resp.media = _dump(result)

        # A function attribute, read back by openapi() and the auth hook; functions declare no attributes to mypy.
        handler.__pvc_operation__ = op  # type: ignore[attr-defined]
        return handler

    return wrap


def body_stream(req: falcon.Request) -> Any:
    """The request body to read: bounded by its Content-Length, or a chunked body up to its end (gunicorn ends it:
    `wsgi.input_terminated`; Falcon's bounded_stream would read nothing)."""
    if req.content_length is None and req.env.get("wsgi.input_terminated"):
        return req.stream
    return req.bounded_stream


def json_body(req: falcon.Request, limit: int = MAX_JSON_BODY) -> Any:
    """The request's JSON body, refused (BodyTooLarge) over `limit` bytes: by its Content-Length before a byte is
    read, or as soon as a chunked body passes it."""
    if req.content_length is not None and req.content_length > limit:
        raise BodyTooLarge(f"the body is {req.content_length} bytes; a JSON body may be at most {limit} bytes")
    data = body_stream(req).read(limit + 1)
    if len(data) > limit:
        raise BodyTooLarge(f"the body is over the limit of {limit} bytes for a JSON body")
    if not data.strip():
        raise RequestInvalid("a JSON body is required", "body")
    try:
        return json.loads(data)
    except (ValueError, RecursionError):  # RecursionError: nested too deeply
        raise RequestInvalid("the body is not valid JSON", "body") from None


def _dump(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_dump(v) for v in value]
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    return value


# -- OpenAPI ------------------------------------------------------------------------------------------------------


def _schema_ref(tp: Any, defs: dict[str, Any]) -> dict[str, Any]:
    """JSON Schema of `tp` with models moved to components."""
    adapter = TypeAdapter(tp)
    schema = adapter.json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    for name, sub in schema.pop("$defs", {}).items():
        defs[name] = sub
    if typing.get_origin(tp) is None and isinstance(tp, type) and issubclass(tp, BaseModel):
        defs[tp.__name__] = schema
        return {"$ref": f"#/components/schemas/{tp.__name__}"}
    return schema


def _request_ref(model: type[BaseModel], defs: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="validation")
    for name, sub in schema.pop("$defs", {}).items():
        defs[name] = sub
    defs[model.__name__] = schema
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def openapi(routes: list[tuple[str, object]], error_model: type[BaseModel], title: str, version: str) -> dict[str, Any]:
    defs: dict[str, Any] = {}
    error_ref = _schema_ref(error_model, defs)
    paths: dict[str, Any] = {}
    for path, resource in routes:
        item: dict[str, Any] = {}
        for method in ("get", "post", "put", "patch", "delete"):
            fn = getattr(resource, f"on_{method}", None)
            op: Operation | None = getattr(fn, "__pvc_operation__", None)
            if op is None:
                continue
            entry: dict[str, Any] = {
                "summary": op.summary,
                "operationId": f"{method}_{path.strip('/').replace('/', '_').replace('{', '').replace('}', '')}",
                "tags": op.tags,
                "responses": {},
            }
            if op.description:
                entry["description"] = op.description
            params = [openapi_parameter(p) for p in _path_params(path)]
            if op.query is not None:
                qschema = op.query.model_json_schema()
                for name, prop in qschema.get("properties", {}).items():
                    params.append(
                        {
                            "name": name,
                            "in": "query",
                            "required": name in qschema.get("required", []),
                            "schema": {k: v for k, v in prop.items() if k != "title"},
                        }
                    )
            if params:
                entry["parameters"] = params
            if op.body is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": _request_ref(op.body, defs)}},
                }
            if op.request_media_type is not None:
                entry["requestBody"] = {
                    "required": True,
                    "content": {op.request_media_type: {"schema": {"type": "string", "format": "binary"}}},
                }
            ok: dict[str, Any] = {"description": "OK"}
            if op.response is not None:
                ok["content"] = {
                    op.media_type: {
                        "schema": _schema_ref(op.response, defs)
                        if op.media_type == "application/json"
                        else {"type": "string"}
                    }
                }
            entry["responses"][str(op.status)] = ok
            for status, (desc, model) in op.extra_statuses.items():
                entry["responses"][str(status)] = {
                    "description": desc,
                    "content": {"application/json": {"schema": _schema_ref(model, defs)}},
                }
            has_input = op.body or op.query or op.request_media_type or _path_params(path)
            statuses = set(op.errors) | {503} | ({400} if has_input else set()) | _body_statuses(op)
            if op.auth:
                statuses.add(401)
            else:
                statuses.discard(503) if path.endswith(("openapi.json", "/docs")) else None
                entry["security"] = []
            for status in sorted(statuses - set(op.extra_statuses)):
                entry["responses"][str(status)] = {
                    "description": ERROR_STATUSES[status],
                    "content": {"application/json": {"schema": error_ref}},
                }
            item[method] = entry
        if item:
            paths[path] = item
    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "The PVC cluster API. Every route except health, this document and the docs page "
            "needs an API key in the X-Api-Key header.",
        },
        "paths": paths,
        "components": {
            "schemas": defs,
            "securitySchemes": {"apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"}},
        },
        "security": [{"apiKey": []}],
    }


def _body_statuses(op: Operation) -> set[int]:
    """413 for an operation that reads a body (JSON, capped; or raw, an upload with its own limit)."""
    return {413} if op.body is not None or op.request_media_type is not None else set()


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
