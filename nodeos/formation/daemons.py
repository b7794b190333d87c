"""The node daemon on every node, and the API on the coordinators: units and readiness probes."""

from __future__ import annotations

import urllib.error
import urllib.request

from pvc.config.schema import API_PREFIX
from pvc.nodeos.formation import units
from pvc.nodeos.formation.machinery import Context, wait_for

PVCD_UNIT = "pvc-pvcd.service"
API_UNIT = "pvc-api.service"
BIN = "/opt/pvc/bin"


def pvcd_unit(config_path: str, node: str, watchdog_sec: int) -> str:
    """pvcd under systemd's watchdog: pvcd says it is alive only while its controllers make progress (timers.watchdog;
    docs/runtime.md), so a stalled pvcd is restarted."""
    return units.render(
        "PVC node daemon",
        [f"{BIN}/pvcd", "--config", config_path, "--node", node],
        after=("pvc-libvirtd.service",),
        watchdog_sec=watchdog_sec,
    )


def api_unit(config_path: str) -> str:
    return units.render(
        "PVC API (gunicorn)",
        [f"{BIN}/gunicorn", "-c", "python:pvc.api.gunicorn", "pvc.api:create_app()"],
        env={"PVC_CONFIG": config_path},
        after=(PVCD_UNIT,),
    )


def pvcd_step(ctx: Context) -> str:
    changed = units.install(PVCD_UNIT, pvcd_unit(str(ctx.config_path), ctx.node.name, ctx.cfg.timers.watchdog))
    units.ensure_running(PVCD_UNIT, changed)
    state = ctx.state

    def running() -> bool:
        units.check_alive(PVCD_UNIT)
        rec = state.node(ctx.node.name)
        return rec.daemon_state == "run"

    wait_for("pvcd to report state 'run'", running, 300, 1.0, log=lambda: units.journal(PVCD_UNIT))
    return "run"


def api_step(ctx: Context) -> str:
    changed = units.install(API_UNIT, api_unit(str(ctx.config_path)))
    units.ensure_running(API_UNIT, changed)
    url = f"http://127.0.0.1:{ctx.cfg.api.port}{API_PREFIX}/health"

    def healthy() -> bool:
        units.check_alive(API_UNIT)
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                return resp.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 503  # answering, the cluster just is not healthy yet

    wait_for(f"the API at {url}", healthy, 180, 1.0, log=lambda: units.journal(API_UNIT))
    return f"listening on port {ctx.cfg.api.port}"
