"""/cluster/keys: the API keys and their roles (list, add, revoke, restore). Admin only; docs/security.md."""

from __future__ import annotations

import falcon

from pvc.api import keys
from pvc.api.models import ApiKeyAdd, ApiKeyNew, ApiKeyView
from pvc.api.resources import Resource
from pvc.api.spec import operation
from pvc.config.schema import INITIAL_KEY_NAME
from pvc.nodeos.state.models import ApiKeyRecord, now
from pvc.nodeos.state.store import Conflict

TAGS = ["cluster"]


def view(record: ApiKeyRecord) -> ApiKeyView:
    return ApiKeyView(**record.model_dump(include=set(ApiKeyView.model_fields)))


class KeysResource(Resource):
    @operation(
        summary="Every API key: name, role, owner, revoked",
        response=list[ApiKeyView],
        errors=(),
        role="admin",
        tags=TAGS,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[ApiKeyView]:
        return sorted((view(r) for r in self.ctx.ready_state().api_keys()), key=lambda v: v.name)

    @operation(
        summary="Make a new API key with a role; the answer shows the key, once",
        body=ApiKeyAdd,
        response=ApiKeyNew,
        status=201,
        errors=(409,),
        tags=TAGS,
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, body: ApiKeyAdd) -> ApiKeyNew:
        if body.name == INITIAL_KEY_NAME:
            raise Conflict(f"'{INITIAL_KEY_NAME}' is the key derived from the join key; choose another name")
        key = keys.new_key()
        record = keys.record(body.name, body.role, "api", key, self.ctx.keys.pepper)
        self.ctx.ready_state().create_api_key(record)
        self.ctx.key_written(record, record.name)
        return ApiKeyNew(**view(record).model_dump(), key=key)


def _last_admin(records: list[ApiKeyRecord], name: str) -> bool:
    """Whether `name` is the only admin key that is not revoked."""
    live = [r.name for r in records if r.role == "admin" and not r.revoked]
    return live == [name]


class KeyResource(Resource):
    @operation(
        summary="Revoke an API key: a key made here is deleted; cluster.toml's and the initial key are marked revoked "
        "(restore brings them back)",
        response=ApiKeyView,
        errors=(404, 409),
        tags=TAGS,
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, key_name: str) -> ApiKeyView:
        state = self.ctx.ready_state()
        record, version = state.api_key(key_name)
        if not record.revoked and _last_admin(state.api_keys(), key_name):
            raise Conflict(
                f"'{key_name}' is the last admin key that is not revoked: add another admin key first "
                "(pvc cluster key add NAME --role admin)"
            )
        revoked = record.model_copy(update={"revoked": True, "revoked_at": record.revoked_at or now()})
        if record.owner == "api":
            state.remove_api_key(key_name, version)
            self.ctx.key_written(None, key_name)
        else:
            state.put_api_key(revoked, version)
            self.ctx.key_written(revoked, key_name)
        return view(revoked)


class KeyRestoreResource(Resource):
    @operation(
        summary="Restore a revoked key of cluster.toml, or the initial key",
        response=ApiKeyView,
        errors=(404,),
        tags=TAGS,
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, key_name: str) -> ApiKeyView:
        state = self.ctx.ready_state()
        record, version = state.api_key(key_name)  # a revoked key made at run time is gone: 404
        restored = record.model_copy(update={"revoked": False, "revoked_at": None})
        if record.revoked:
            state.put_api_key(restored, version)
            self.ctx.key_written(restored, key_name)
        return view(restored)
