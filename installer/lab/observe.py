"""Watching a lab's nodes: formation progress (a container node's /run/pvc/formation.json, or a vm node's serial
console, read with the console protocol of pvc.nodeos.boot.console), problems, and the cluster's health through its
own API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from pvc.installer.lab import state
from pvc.installer.lab.command import LabError
from pvc.installer.lab.machine import since_power_on
from pvc.installer.lab.state import Lab, LabNode
from pvc.nodeos.boot import console
from pvc.nodeos.state.models import FormationProgress, FormationStep

Say = Callable[[str], None]


def init_pid(name: str) -> int | None:
    power = state.power().get(name)
    return power.init_pid if power else None


def formation(name: str) -> FormationProgress | None:
    """The node's /run/pvc/formation.json (container backend: read through /proc/PID/root)."""
    pid = init_pid(name)
    if pid is None:
        return None
    try:
        return FormationProgress.model_validate_json(Path(f"/proc/{pid}/root/run/pvc/formation.json").read_text())
    except (OSError, ValueError):
        return None


def console_text(node: LabNode) -> str | None:
    """The node's console since its last power-on."""
    try:
        return since_power_on(Path(node.console_log).read_text(errors="replace"))
    except OSError:
        return None


def console_tail(node: LabNode, lines: int = 40) -> str:
    try:
        text = Path(node.console_log).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def node_failure(node: LabNode) -> str | None:
    """The last failed step or config problem a node's console reports since its last power-on, if any."""
    text = console_text(node)
    return console.last_problem(text) if text is not None else None


def console_progress(node: LabNode) -> FormationProgress | None:
    """Formation progress as the node's console shows it since its last power-on (the same shape as
    formation.json, with only the steps seen so far)."""
    text = console_text(node)
    if text is None:
        return None
    steps = console.steps_seen(text)
    if not steps:
        return None
    return FormationProgress(
        node=node.name,
        steps=[FormationStep(name=name, state=st) for name, st in steps.items()],
        done=console.DONE_MARKER in text,
    )


def progress(lab: Lab, node: LabNode) -> FormationProgress | None:
    return console_progress(node) if lab.backend == "vm" else formation(node.name)


def reached(prog: FormationProgress, until: str | None) -> bool:
    """Formation is done, or (with `until`) that step is."""
    return prog.done or any(s.name == until and s.state == "done" for s in prog.steps)


def wait_formed(lab: Lab, timeout: float, say: Say, until: str | None = None) -> None:
    """Wait until every node has formed (or, with `until`, every node's console shows that step done)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    start = time.monotonic()
    while True:
        done = 0
        for node in lab.nodes:
            prog = progress(lab, node)
            if prog is None:
                continue
            running = next((s for s in prog.steps if s.state in ("running", "failed")), None)
            line = "formed" if prog.done else (f"{running.name} ({running.state})" if running else "starting")
            if running is not None and running.state == "failed":  # say why as soon as it happens
                line += f": {running.message or node_failure(node) or 'no reason given'}"
            if seen.get(node.name) != line:
                seen[node.name] = line
                say(f"{time.monotonic() - start:6.1f}s {node.name}: {line}")
            done += reached(prog, until)
        if done == len(lab.nodes):
            what = f"reached '{until}'" if until else "formed"
            say(f"lab: all {done} node(s) {what} in {time.monotonic() - start:.0f} s")
            return
        if time.monotonic() > deadline:
            report = []
            for node in lab.nodes:
                prog = progress(lab, node) or FormationProgress(node=node.name)
                if not reached(prog, until):
                    failure = node_failure(node) or "no failure reported (still running)"
                    report.append(
                        f"{node.name}: {failure}\n--- console of {node.name} (last lines) ---\n{console_tail(node)}"
                    )
            raise LabError(f"the cluster did not form within {timeout:.0f} s:\n" + "\n".join(report))
        time.sleep(2)


def api_get(url: str, key: str, path: str, ca_pem: str | None) -> dict:
    """GET `path` of the API at `url` (the lab's forward), verified against the cluster CA `ca_pem` over https."""
    import ssl
    import urllib.request

    from pvc.config.schema import API_PREFIX

    context = ssl.create_default_context(cadata=ca_pem) if ca_pem else None
    req = urllib.request.Request(f"{url}{API_PREFIX}{path}", headers={"X-Api-Key": key})
    with urllib.request.urlopen(req, timeout=10, context=context) as resp:
        return json.loads(resp.read())


def wait_healthy(url: str, key: str, ca_pem: str | None, timeout: float, say: Say) -> None:
    """After formation: the primary's API answers through the forward, every node runs, no fault is open, and
    Ceph reports HEALTH_OK (as the primary publishes it every keepalive)."""
    deadline = time.monotonic() + timeout
    last: object = "no answer"
    while time.monotonic() < deadline:
        try:
            status = api_get(url, key, "/cluster", ca_pem)
            storage = api_get(url, key, "/storage", ca_pem)
            if status.get("health") == "ok" and storage.get("health") == "HEALTH_OK":
                nodes = status.get("nodes", {}).get("total")
                say(
                    f"lab: healthy: primary {status.get('primary')}, {nodes} node(s) running, Ceph HEALTH_OK "
                    f"({storage.get('osds_up')}/{storage.get('osds')} OSDs up), API at {url}"
                )
                return
            last = {"cluster": status.get("health"), "ceph": storage.get("health"), "checks": storage.get("checks")}
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(2)
    raise LabError(f"the cluster formed but is not healthy after {timeout:.0f} s: {last}")


def status_rows(lab: Lab) -> list[dict[str, object]]:
    """One row per node for `pvc-lab status`: power, formation and the last problem its console shows."""
    power = state.power()
    rows: list[dict[str, object]] = []
    for node in lab.nodes:
        prog = progress(lab, node) or FormationProgress(node=node.name)
        pw = power.get(node.name)
        rows.append(
            {
                "node": node.name,
                "power": pw.power if pw else "unknown",
                "formed": prog.done,
                "steps_done": sum(1 for s in prog.steps if s.state == "done"),
                "steps": len(prog.steps),
                "current": next((s.name for s in prog.steps if s.state != "done"), ""),
                "problem": node_failure(node) or "",
                "address": node.ip,
            }
        )
    return rows
