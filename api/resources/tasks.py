"""/tasks: the long operations (flush, ready, migrations, OSD requests) and their progress, which clients poll."""

from __future__ import annotations

import falcon

from pvc.api.resources import Resource
from pvc.api.spec import operation
from pvc.nodeos.state.models import Task
from pvc.nodeos.state.store import NotFound


class TasksResource(Resource):
    @operation(
        summary="Long operations (flush, ready, migrations), newest first",
        response=list[Task],
        errors=(),
        tags=["tasks"],
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[Task]:
        return sorted(self.ctx.ready_state().tasks(), key=lambda t: t.created, reverse=True)


class TaskResource(Resource):
    @operation(summary="One task and its progress", response=Task, tags=["tasks"])
    def on_get(self, req: falcon.Request, resp: falcon.Response, task_id: str) -> Task:
        try:
            return self.ctx.ready_state().task(task_id)
        except NotFound:
            raise NotFound(f"task '{task_id}'") from None
