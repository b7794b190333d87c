"""Operations and the OpenAPI 3.1 document, from one declaration.

Each resource method is decorated with `@operation(...)`, naming its query model, body model and response model.
The decorator validates the request with those pydantic models before the method runs and serialises what it
returns; `openapi()` walks the same declarations, so the document cannot drift from the code.
"""

from __future__ import annotations

import functools
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import falcon
from pydantic import BaseModel, TypeAdapter, ValidationError

ERROR_STATUSES = {
    400: "Invalid request: the body, a query parameter or a path names something wrong",
    401: "Missing or wrong API key (header X-Api-Key)",
    404: "No such object",
    409: "Not possible in the object's current state",
    503: "The cluster is not ready (ZooKeeper unreachable, or not formed yet)",
}


MAX_JSON_BODY = 2 * 1024 * 1024  # bytes: a JSON request body is read whole into memory


class RequestInvalid(Exception):
    def __init__(self, message: str, field: str | None) -> None:
        super().__init__(message)
        self.field = field


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


def _field_of(error: dict) -> str:
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
        def handler(self, req: falcon.Request, resp: falcon.Response, **params: Any) -> None:  # type: ignore[no-untyped-def]
            call: dict[str, Any] = {}
            if op.query is not None:
                raw = {k: v for k, v in req.params.items()}
                try:
                    call["query"] = op.query.model_validate(raw)
                except ValidationError as exc:
                    raise RequestInvalid(*validation_message(exc)) from None
            if op.body is not None:
                if (req.content_length or 0) > MAX_JSON_BODY:
                    while req.bounded_stream.read(65536):  # drained, never held: the client then reads the 400
                        pass
                    raise RequestInvalid(
                        f"the body is {req.content_length} bytes; a JSON body is at most {MAX_JSON_BODY} bytes", "body"
                    )
                try:
                    media = req.get_media()
                except falcon.MediaNotFoundError:
                    raise RequestInvalid("a JSON body is required", "body") from None
                except falcon.MediaMalformedError:
                    raise RequestInvalid("the body is not valid JSON", "body") from None
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

        handler.__pvc_operation__ = op  # type: ignore[attr-defined]
        return handler

    return wrap


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
            params = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                for p in _path_params(path)
            ]
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
            statuses = set(op.errors) | {503} | ({400} if has_input else set())
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


def _path_params(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
