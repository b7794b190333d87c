"""/provisioner/create: make a VM from a profile (or from an image, without templates) as a task.

Everything is checked before the answer (a 400/404/409 names what is wrong, and nothing is made); then the task is
returned at once (202) and this worker makes the VM in a thread, step by step (pvc.nodeos.provisioner.create),
reporting to the task, which clients follow at /tasks/{task_id}.
"""

from __future__ import annotations

import logging
import threading

import falcon

from pvc.api.resources import Resource
from pvc.api.resources.provisioner import TAGS
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.provisioner import create
from pvc.nodeos.state.models import Task

log = logging.getLogger(__name__)


class CreateResource(Resource):
    @operation(
        summary="Create a VM from a profile, or from an image without templates",
        body=create.CreateRequest,
        response=Task,
        status=202,
        errors=(404, 409),
        tags=TAGS,
        description="Checked first, with nothing made: a unique name, a node with room for the memory, the "
        "networks, the pools (under the 80 % guard), the images, the user-data with the arguments put in. Then "
        "the task is returned at once; the VM is made in steps: each disk cloned from its image's protected "
        "snapshot (copy-on-write) and grown, the VM defined (stopped), the cloud-init seed written to the volume "
        "<vm>_cidata (a read-only disk), the VM started if asked. A failed step removes everything made and the "
        "task says which step failed and why.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, body: create.CreateRequest) -> Task:
        state = self.ctx.ready_state()
        plan = create.plan(body, create.load(self.ctx.provisioner, body))
        selector = self.ctx.cfg.migration.selector
        node = create.check(state, self.ctx.ceph, plan, selector)
        task = state.create_task("create", body.name, total=plan.steps, message=f"from {plan.source}")
        prefix = self.ctx.vm_mac_prefix

        def work() -> None:
            try:
                create.run(state, self.ctx.ceph, self.ctx.provisioner, plan, task, node, prefix, selector)
            except Exception:  # run ends the task itself; this is a lost ZooKeeper session while it did
                log.exception("create %s: task %s", body.name, task.id)

        threading.Thread(target=work, name=f"create {body.name}", daemon=True).start()
        resp.location = f"{API_PREFIX}/tasks/{task.id}"
        return task
