"""The five routes every provisioner object has, made once: list and add on the collection, info, modify (PATCH)
and remove on the item. A `Kind` names the object's table (its models and how it is stored), its PATCH body and
the check of its references to the rest of the cluster (networks, nodes, pools), which runs on what is added and
on the result of a change.
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
from pvc.api.resources.provisioner import TAGS, applying
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.provisioner import store


@dataclass(frozen=True)
class Kind:
    what: str  # "system template"
    path: str  # "/provisioner/templates/system"
    param: str  # the item's path parameter: "template"
    table: store.Table[Any]
    change: type[BaseModel]  # the PATCH body
    check: Callable[[Context, Any], None] = lambda ctx, obj: None  # references outside the database
    refs: str = ""  # what `check` and the store check, for the description


def routes(kind: Kind) -> tuple[type[Resource], type[Resource]]:
    """The collection's and the item's resource classes of `kind`."""

    table = kind.table
    summary = GenericAlias(list, (table.summary or table.view,))

    class Collection(Resource):
        @operation(summary=f"Every {kind.what}", response=summary, errors=(), tags=TAGS)
        def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[Any]:
            return self.ctx.provisioner.transaction(table.list, write=False)

        @operation(
            summary=f"Add a {kind.what}",
            body=table.model,
            response=table.view,
            status=201,
            errors=(409,),
            tags=TAGS,
            description=f"{kind.refs} A taken name is refused (409).".strip(),
        )
        def on_post(self, req: falcon.Request, resp: falcon.Response, body: BaseModel) -> Any:
            kind.check(self.ctx, body)
            made = self.ctx.provisioner.transaction(lambda cur: table.add(cur, body))
            resp.location = f"{API_PREFIX}{kind.path}/{made.name}"
            return made

    class Item(Resource):
        @operation(summary=f"One {kind.what}", response=table.view, tags=TAGS)
        def on_get(self, req: falcon.Request, resp: falcon.Response, **params: str) -> Any:
            name = params[kind.param]
            return self.ctx.provisioner.transaction(lambda cur: table.get(cur, name), write=False)

        @operation(
            summary=f"Change a {kind.what}",
            body=kind.change,
            response=table.view,
            tags=TAGS,
            description="The fields given replace the stored ones (a list replaces the whole list; null clears an "
            f"optional field); the result is checked as a whole, as when it was added. {kind.refs}".strip(),
        )
        def on_patch(self, req: falcon.Request, resp: falcon.Response, body: BaseModel, **params: str) -> Any:
            name = params[kind.param]
            change = applying(body, lambda new: kind.check(self.ctx, new))
            return self.ctx.provisioner.transaction(lambda cur: table.modify(cur, name, change))

        @operation(
            summary=f"Remove a {kind.what}",
            response=Removed,
            errors=(404, 409),
            tags=TAGS,
            description="Refused (409, naming them) while something uses it.",
        )
        def on_delete(self, req: falcon.Request, resp: falcon.Response, **params: str) -> Removed:
            name = params[kind.param]
            self.ctx.provisioner.transaction(lambda cur: table.remove(cur, name))
            return Removed(removed=name)

    for cls, suffix in ((Collection, "s"), (Item, "")):
        cls.__name__ = cls.__qualname__ = kind.what.title().replace(" ", "") + suffix + "Resource"
    return Collection, Item
