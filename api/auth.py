"""API keys: stored only as SHA-256 digests, compared in constant time, failures logged without the key."""

from __future__ import annotations

import hashlib
import hmac
import logging

import falcon

log = logging.getLogger("pvc.api.auth")
HEADER = "X-Api-Key"


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    def __init__(self, digests: dict[str, bytes]) -> None:
        self.digests = digests  # name -> sha256

    def match(self, presented: str) -> str | None:
        """The name of the key `presented` is, checking every key (no early exit)."""
        candidate = digest(presented)
        found = None
        for name, known in self.digests.items():
            if hmac.compare_digest(candidate, known):
                found = name
        return found


class AuthMiddleware:
    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object, params: dict) -> None:
        if resource is None:
            return
        responder = getattr(resource, f"on_{req.method.lower()}", None)
        op = getattr(responder, "__pvc_operation__", None)
        if op is not None and not op.auth:
            return
        presented = req.get_header(HEADER)
        if not presented:
            bearer = req.get_header("Authorization") or ""
            presented = bearer.removeprefix("Bearer ").strip() if bearer.startswith("Bearer ") else ""
        if not presented:
            log.warning("no API key from %s for %s %s", req.remote_addr, req.method, req.path)
            raise falcon.HTTPUnauthorized(
                title="unauthorized", description=f"an API key is required in the {HEADER} header"
            )
        name = self.keys.match(presented)
        if name is None:
            log.warning("wrong API key from %s for %s %s", req.remote_addr, req.method, req.path)
            raise falcon.HTTPUnauthorized(title="unauthorized", description="the API key is not valid for this cluster")
        req.context.api_key = name
