"""The API's resources: one module per noun (storage: one per sub-noun), one class per route, each named
`<Noun>Resource` and built on `Resource`; `pvc.api.app.routes` maps the paths onto them."""

from __future__ import annotations

from pvc.api.context import Context


class Resource:
    """Serves one route. `ctx` is the worker's Context: config, state layer, Ceph connection, API keys."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
