"""Every failure becomes JSON `{"error", "detail", "field"}` with the right status; never a traceback."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import falcon
from kazoo.exceptions import KazooException

from pvc.api.paths import PathInvalid
from pvc.api.spec import BodyTooLarge, RequestInvalid
from pvc.nodeos.state.actions import ActionError
from pvc.nodeos.state.macs import NoFreeMac
from pvc.nodeos.state.placement import NoTarget
from pvc.nodeos.state.store import Conflict, NotFound
from pvc.nodeos.state.vmimport import VmXmlError
from pvc.nodeos.state.vmstate import TransitionError
from pvc.nodeos.storage import ceph

log = logging.getLogger("pvc.api")

Handler = Callable[[falcon.Request, falcon.Response, Exception, dict[str, Any]], None]  # Falcon's error handler


class ClusterNotReady(Exception):
    pass


def body(error: str, detail: str, field: str | None = None) -> dict:
    return {"error": error, "detail": detail, "field": field}


def _send(resp: falcon.Response, status: int, error: str, detail: str, field: str | None = None) -> None:
    resp.status = status
    resp.media = body(error, detail, field)


def install(app: falcon.App) -> None:
    def serialize(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
        resp.content_type = falcon.MEDIA_JSON
        title = (exc.title or "error").lower()
        error = title.split(" ", 1)[1] if title[:3].isdigit() and " " in title else title  # "404 not found"
        detail = exc.description
        if detail is None:
            if isinstance(exc, falcon.HTTPRouteNotFound) or exc.status_code == 404:
                detail = f"no such route: {req.method} {req.path}"
            elif exc.status_code == 405:
                detail = f"{req.method} is not allowed on {req.path}"
            else:
                detail = error
        resp.media = body(error, detail, None)

    app.set_error_serializer(serialize)

    def handler(status: int, error: str, field_attr: str | None = None) -> Handler:
        def handle(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
            field = getattr(exc, field_attr, None) if field_attr else None
            detail = str(exc)
            if isinstance(exc, NotFound) and detail.startswith("/"):  # a bare ZooKeeper path
                detail = f"no such object: {detail}"
            _send(resp, status, error, detail, field)

        return handle

    def unexpected(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
        if isinstance(exc, falcon.HTTPError):
            raise exc
        log.exception("unexpected error in %s %s", req.method, req.path)
        _send(resp, 500, "internal error", f"{type(exc).__name__}: the server logged the details")

    def zookeeper(req: falcon.Request, resp: falcon.Response, exc: Exception, params: dict[str, Any]) -> None:
        _send(resp, 503, "cluster not ready", f"ZooKeeper did not answer: {type(exc).__name__}")

    app.add_error_handler(Exception, unexpected)
    app.add_error_handler(KazooException, zookeeper)
    app.add_error_handler(RequestInvalid, handler(400, "invalid request", "field"))
    app.add_error_handler(PathInvalid, handler(400, "invalid request", "field"))
    app.add_error_handler(BodyTooLarge, handler(413, "too large"))
    app.add_error_handler(ActionError, handler(400, "invalid request", "field"))

    def refused_xml(req, resp, exc: VmXmlError, params):  # type: ignore[no-untyped-def]
        """Every refused part of a domain XML: one per line of `detail` (after the first), and in `problems`."""
        count = len(exc.problems)
        detail = f"PVC cannot import {count} part{'s' * (count != 1)} of the domain XML\n{exc}"
        resp.status = 400
        resp.media = {
            **body("invalid request", detail, "xml"),
            "problems": [{"path": path, "message": message} for path, message in exc.problems],
        }

    app.add_error_handler(VmXmlError, refused_xml)
    app.add_error_handler(NotFound, handler(404, "not found"))
    app.add_error_handler(TransitionError, handler(409, "conflict"))
    app.add_error_handler(NoTarget, handler(409, "no target node"))
    app.add_error_handler(Conflict, handler(409, "conflict"))
    app.add_error_handler(NoFreeMac, handler(409, "conflict"))
    app.add_error_handler(ClusterNotReady, handler(503, "cluster not ready"))
    app.add_error_handler(ceph.StorageError, handler(409, "storage error"))
    app.add_error_handler(ceph.Missing, handler(404, "not found"))
    app.add_error_handler(ceph.Exists, handler(409, "conflict"))
    app.add_error_handler(ceph.Refused, handler(409, "refused"))
    app.add_error_handler(ceph.Invalid, handler(400, "invalid request", "field"))
    app.add_error_handler(ceph.TooLarge, handler(413, "too large"))
    app.add_error_handler(ceph.Unavailable, handler(503, "storage not ready"))
