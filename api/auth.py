"""Authentication and authorization of every request: the API key (X-Api-Key, or Authorization: Bearer), its role
against the role the operation needs (@operation's `role`), and a limit on failed attempts per client address.

Keys are matched against digests only, in constant time over every key (pvc.api.keys). Failures are logged with the
client's address and the path (repr'd: a path may hold CR or LF), never the key.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable

import falcon

from pvc.api.keys import allows, match
from pvc.api.ratelimit import FailureLimiter
from pvc.nodeos.state.models import ApiKeyRecord

log = logging.getLogger("pvc.api.auth")
HEADER = "X-Api-Key"


def presented_key(req: falcon.Request) -> str:
    key = req.get_header(HEADER)
    if key:
        return key
    bearer = req.get_header("Authorization") or ""
    return bearer.removeprefix("Bearer ").strip() if bearer.startswith("Bearer ") else ""


class AuthMiddleware:
    """`records()` gives the current key records (raising ClusterNotReady when they cannot be read); `pepper` is the
    HMAC key of their digests."""

    def __init__(
        self, records: Callable[[], Iterable[ApiKeyRecord]], pepper: bytes, limiter: FailureLimiter | None = None
    ) -> None:
        self.records, self.pepper = records, pepper
        self.limiter = limiter or FailureLimiter()

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict) -> None:
        if resource is None:
            return
        responder = getattr(resource, f"on_{req.method.lower()}", None)
        op = getattr(responder, "__pvc_operation__", None)
        if op is not None and not op.auth:
            return
        where = f"{req.method} {req.path!r}"
        presented = presented_key(req)
        if not presented:
            log.warning("no API key from %s for %s", req.remote_addr, where)
            raise falcon.HTTPUnauthorized(
                title="unauthorized", description=f"an API key is required in the {HEADER} header"
            )
        wait = self.limiter.retry_after(req.remote_addr)
        if wait is not None:
            log.warning("too many failed authentications from %s: refused %s", req.remote_addr, where)
            raise falcon.HTTPTooManyRequests(
                title="too many requests",
                description=f"too many wrong API keys from {req.remote_addr}: try again in {math.ceil(wait)} s",
                retry_after=math.ceil(wait),
            )
        found = match(self.records(), presented, self.pepper)
        if found is None or found.revoked:
            self.limiter.failed(req.remote_addr)
            if found is None:
                log.warning("wrong API key from %s for %s", req.remote_addr, where)
                raise falcon.HTTPUnauthorized(
                    title="unauthorized", description="the API key is not valid for this cluster"
                )
            log.warning("revoked API key '%s' from %s for %s", found.name, req.remote_addr, where)
            raise falcon.HTTPUnauthorized(
                title="unauthorized", description=f"the API key '{found.name}' has been revoked"
            )
        req.context.api_key = found.name
        req.context.api_role = found.role
        # No responder for this method: Falcon answers 405 next, nothing to allow. A responder not declared with
        # @operation (there should be none) needs admin.
        need = None if responder is None else op.role if op is not None else "admin"
        if need is not None and not allows(found.role, need):
            log.warning("API key '%s' (%s) from %s may not %s", found.name, found.role, req.remote_addr, where)
            raise falcon.HTTPForbidden(
                title="forbidden",
                description=f"this operation needs an API key with the role '{need}'; the key '{found.name}' has "
                f"the role '{found.role}'",
            )
