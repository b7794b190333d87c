"""The API under a real gunicorn, against a real ZooKeeper, for component tests."""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tests.component.procs import Proc, wait_until

VENV_BIN = Path(sys.executable).parent


class ApiServer:
    def __init__(
        self,
        workdir: Path,
        config: Path,
        zk_hosts: str,
        port: int,
        workers: int = 2,
        env: dict[str, str] | None = None,
    ) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "PVC_CONFIG": str(config),
            "PVC_ZOOKEEPER": zk_hosts,
            "PVC_API_BIND": f"127.0.0.1:{port}",
            "PVC_API_WORKERS": str(workers),
            **(env or {}),
        }
        self.proc = Proc(
            "gunicorn",
            [str(VENV_BIN / "gunicorn"), "-c", "python:pvc.api.gunicorn", "pvc.api:create_app()"],
            workdir / "gunicorn.log",
            env=env,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        def up() -> bool:
            status, _ = self.call("GET", "/api/v1/health")
            return status == 200

        wait_until("the API to answer /health with 200", up, timeout, interval=0.2, proc=self.proc)

    def call(
        self,
        method: str,
        path: str,
        body: object = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> tuple[int, object]:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        if key:
            req.add_header("X-Api-Key", key)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=330) as resp:
                payload = resp.read()
                status = resp.status
                ctype = resp.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            payload, status, ctype = exc.read(), exc.code, exc.headers.get("Content-Type", "")
        if "json" in ctype:
            return status, json.loads(payload or b"null")
        return status, payload.decode(errors="replace")

    def stop(self) -> None:
        self.proc.stop(timeout=10)
