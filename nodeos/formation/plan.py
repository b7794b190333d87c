"""The formation graph: which steps run on a node, in which order, and how progress is reported.

Each step renders its files, applies them, starts its service and waits on a real readiness probe (machinery.py).
Progress goes to the console and, once ZooKeeper is reachable, to /formation/<node> (and /run/pvc/formation.json).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pvc.config import resolve
from pvc.nodeos.boot import console, data, disks
from pvc.nodeos.formation import (
    ceph,
    daemons,
    firewall,
    frr,
    libvirt,
    network,
    patroni,
    provisioner,
    system,
    zookeeper,
)
from pvc.nodeos.formation.machinery import Context, Step, StepFailed, run_step
from pvc.nodeos.state.models import FormationProgress, FormationStep

STATUS_FILE = Path("/run/pvc/formation.json")


def runs(service: str) -> Callable[[Context], bool]:
    """A step's condition: this node runs `service` (pvc.config.resolve.SERVICES, which `pvc config show` lists)."""
    return lambda ctx: resolve.runs(ctx.node, service)


VERBS = {"mount": "reusing", "create": "created", "format": "finished", "repair": "repaired"}


def _data(ctx: Context) -> str:
    outcome = data.prepare(ctx.node, disks.scan([ctx.node.data_disk]), ctx.secrets.ceph_fsid, log=ctx.say)
    ctx.data = outcome  # recorded in ZooKeeper by the zookeeper-client step
    return f"{VERBS[outcome.action]} {data.LABEL} {outcome.part}, mounted on {data.MOUNT}"


# Each step's deadline (seconds) covers all of it: render, apply, start, probe. The steps that wait for a majority
# of coordinators (ZooKeeper, the mons, Patroni) wait up to 20 minutes for the others to boot; the rest are a few
# times what they take under TCG on two shared cores (docs/formation.md, "Deadlines").
STEPS: list[Step] = [
    Step("data", _data, timeout=1800),  # a first mkfs, or an fsck of a large PVCDATA
    Step("system", system.step, timeout=120),
    Step("network", network.step, timeout=180),
    Step("firewall", firewall.step, timeout=60),  # before any service listens
    Step("zookeeper", zookeeper.step, runs("zookeeper"), timeout=1260),
    Step("zookeeper-client", zookeeper.client_step, timeout=1260),
    Step("ceph-config", ceph.conf_step, timeout=60),
    Step("ceph-mon", ceph.mon_step, runs("ceph-mon"), timeout=1320),
    Step("ceph-mgr", ceph.mgr_step, runs("ceph-mgr"), timeout=660),
    Step("ceph-osd", ceph.osd_step, runs("ceph-osd"), timeout=1800),  # up to 600 s of mkfs per new disk
    Step("ceph-pools", ceph.pools_step, runs("ceph-mon"), timeout=660),  # created by the monitors' nodes, under a lock
    Step("patroni", patroni.step, runs("patroni"), timeout=1320),
    Step("provisioner-db", provisioner.step, runs("patroni"), timeout=660),  # the API's database on the Patroni leader
    Step("frr", frr.step, runs("frr"), timeout=240),
    Step("libvirt", libvirt.step, runs("libvirtd"), timeout=libvirt.DEADLINE),
    Step("pvcd", daemons.pvcd_step, runs("pvcd"), timeout=360),
    Step("api", daemons.api_step, runs("pvc-api"), timeout=240),
]


def steps_for(ctx: Context) -> list[Step]:
    return [s for s in STEPS if s.when(ctx)]


class Reporter:
    """Keeps the step list; prints each change and publishes it where the API and the lab can read it."""

    def __init__(self, ctx: Context, names: list[str]) -> None:
        self.ctx = ctx
        self.progress = FormationProgress(node=ctx.node.name, steps=[FormationStep(name=n) for n in names])

    def set(self, index: int, state: str, message: str = "") -> None:
        steps = list(self.progress.steps)
        steps[index] = steps[index].model_copy(update={"state": state, "message": message, "updated": time.time()})
        done = all(s.state == "done" for s in steps)
        self.progress = self.progress.model_copy(update={"steps": steps, "done": done, "updated": time.time()})
        self.publish()

    def publish(self) -> None:
        with contextlib.suppress(OSError):
            STATUS_FILE.parent.mkdir(parents=True, exist_ok=True)
            STATUS_FILE.write_text(json.dumps(self.progress.model_dump(mode="json")))
        if self.ctx.zk is not None and self.ctx.zk.connected:
            with contextlib.suppress(Exception):  # progress is informative: never fail formation on it
                self.ctx.state.set_formation(self.progress)


Result = Literal["formed", "failed", "halted"]


def form(ctx: Context) -> Result:
    """Run the graph: "formed" when every step is done; on a failure the console says which step, why, and the log.
    "halted" when the node must not try again by itself (PVCDATA damaged beyond repair)."""
    steps = steps_for(ctx)
    rep = Reporter(ctx, [s.name for s in steps])
    total = len(steps)
    for i, step in enumerate(steps):
        tag = console.step_tag(i + 1, total, step.name)
        ctx.say(console.step_starting(tag))
        rep.set(i, "running")
        started = time.monotonic()
        try:
            message = run_step(step.name, step.timeout, functools.partial(step.run, ctx)) or ""
        except StepFailed as exc:
            rep.set(i, "failed", str(exc))
            ctx.say(console.step_failed(tag, str(exc)))
            for line in exc.log.strip().splitlines()[-20:]:
                ctx.say(f"    {line}")
            ctx.say(console.failed(ctx.node.name, step.name))
            return "failed"
        except data.DataError as exc:
            rep.set(i, "failed", str(exc))
            ctx.say(console.step_failed(tag, str(exc)))
            ctx.say(console.failed(ctx.node.name, step.name))
            return "halted" if isinstance(exc, data.DataHalt) else "failed"
        rep.set(i, "done", message)
        ctx.say(console.step_done(tag, time.monotonic() - started, message))
    ctx.say(console.done(ctx.node.name, total))
    return "formed"
