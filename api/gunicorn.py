"""gunicorn settings from cluster.toml: `gunicorn -c python:pvc.api.gunicorn 'pvc.api:create_app()'`.

Listens on all addresses of the node (the primary also holds the upstream floating IP, which is the address
clients use), with the workers and TLS files cluster.toml's [api] gives. PVC_API_BIND overrides the address.
"""

from __future__ import annotations

import os
from pathlib import Path

from pvc.api.context import ConfigError, from_environment
from pvc.config.load import load, resolve_file

_path = os.environ.get("PVC_CONFIG", "/run/pvc/cluster.toml")
_result = load(_path)
if not _result.valid or _result.config is None:
    raise SystemExit("pvc-api: invalid cluster.toml:\n" + "\n".join(p.format(_path) for p in _result.errors))
try:  # secrets files too: a worker that cannot boot would only show a traceback in the log
    from_environment()
except (ConfigError, ValueError) as exc:
    raise SystemExit(f"pvc-api: {exc}") from None
_api = _result.config.api
_base = Path(_path).resolve().parent

bind = [os.environ.get("PVC_API_BIND", f"0.0.0.0:{_api.port}")]
workers = int(os.environ.get("PVC_API_WORKERS", _api.workers))
threads = int(os.environ.get("PVC_API_THREADS", "4"))
# gthread workers report to the arbiter from their main loop, not from the threads serving requests, so a long
# upload or download is never cut off; `timeout` only replaces a worker whose main loop hangs. (A sync worker,
# which threads = 1 would otherwise pick, is killed by `timeout` in the middle of a long request.)
worker_class = "gthread"
timeout = 30
graceful_timeout = 10
accesslog = "-"
if _api.tls_cert_file and _api.tls_key_file:
    certfile = str(resolve_file(_api.tls_cert_file, _base))
    keyfile = str(resolve_file(_api.tls_key_file, _base))
