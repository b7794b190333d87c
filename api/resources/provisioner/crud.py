"""The five routes every provisioner object has, made once: list and add on the collection, info, modify (PATCH)
and remove on the item. A `Kind` names the object's models, its store functions and the check of its references
to the rest of the cluster (networks, nodes, pools), which runs on what is added and on the result of a change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import GenericAlias
from typing import Any

import falcon
from pydantic import BaseModel

from pvc.api.context import Context
from pvc.api.models import Removed
from pvc.api.resources import Resource
from pvc.api.resources.provisioner import TAGS, applying, name_param
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.provisioner.db import Cursor


@dataclass(frozen=True)
class Kind:
    what: str  # "system template"
    path: str  # "/provisioner/templates/system"
    param: str  # the item's path parameter: "template"
    model: type[BaseModel]
    change: type[BaseModel]
    view: Any  # the model of one object in answers
    summary: Any  # the model of an object in a list
    list: Callable[[Cursor], list[Any]]
    get: Callable[[Cursor, str], Any]
    add: Callable[[Cursor, Any], Any]
    modify: Callable[[Cursor, str, Callable[[Any], Any]], Any]
    remove: Callable[[Cursor, str], None]
    check: Callable[[Context, Any], None] = lambda ctx, obj: None  # references outside the database
    refs: str = ""  # what `check` and the store check, for the description


def routes(kind: Kind) -> tuple[type[Resource], type[Resource]]:
    """The collection's and the item's resource classes of `kind`."""

    class Collection(Resource):
        @operation(summary=f"Every {kind.what}", response=GenericAlias(list, (kind.summary,)), errors=(), tags=TAGS)
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[Any]:
            return self.ctx.provisioner.transaction(kind.list, write=False)

        @operation(
            summary=f"Add a {kind.what}",
            body=kind.model,
            response=kind.view,
            status=201,
            errors=(409,),
            tags=TAGS,
            description=f"{kind.refs} A taken name is refused (409).".strip(),
        )
        def on_post(self, req: falcon.Request, resp: falcon.Response, body: BaseModel) -> Any:
            kind.check(self.ctx, body)
            made = self.ctx.provisioner.transaction(lambda cur: kind.add(cur, body))
            resp.location = f"{API_PREFIX}{kind.path}/{made.name}"
            return made

    class Item(Resource):
        @operation(summary=f"One {kind.what}", response=kind.view, tags=TAGS)
        def on_get(self, req: falcon.Request, resp: falcon.Response, **params: str) -> Any:
            name = name_param(params[kind.param], kind.what)
            return self.ctx.provisioner.transaction(lambda cur: kind.get(cur, name), write=False)

        @operation(
            summary=f"Change a {kind.what}",
            body=kind.change,
            response=kind.view,
            tags=TAGS,
            description="The fields given replace the stored ones (a list replaces the whole list; null clears an "
            f"optional field); the result is checked as a whole, as when it was added. {kind.refs}".strip(),
        )
        def on_patch(self, req: falcon.Request, resp: falcon.Response, body: BaseModel, **params: str) -> Any:
            name = name_param(params[kind.param], kind.what)
            change = applying(body, lambda new: kind.check(self.ctx, new))
            return self.ctx.provisioner.transaction(lambda cur: kind.modify(cur, name, change))

        @operation(
            summary=f"Remove a {kind.what}",
            response=Removed,
            errors=(404, 409),
            tags=TAGS,
            description="Refused (409, naming them) while something uses it.",
        )
        def on_delete(self, req: falcon.Request, resp: falcon.Response, **params: str) -> Removed:
            name = name_param(params[kind.param], kind.what)
            self.ctx.provisioner.transaction(lambda cur: kind.remove(cur, name))
            return Removed(removed=name)

    for cls, suffix in ((Collection, "s"), (Item, "")):
        cls.__name__ = cls.__qualname__ = kind.what.title().replace(" ", "") + suffix + "Resource"
    return Collection, Item
