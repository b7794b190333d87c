"""The node daemon on every node, and the API on the coordinators: units, files and readiness probes.

The API (docs/security.md, "The API"): HTTPS with a certificate of the cluster CA issued here (or the administrator's
own, copied here), on the node's own addresses; gunicorn's master starts as root only to fork workers that run as
the unprivileged `pvc-api` user, in a systemd sandbox. What the workers read lives in API_DIR, readable by their
group: the TLS certificate and key, and a Ceph configuration and keyring of their own.
"""

from __future__ import annotations

import dataclasses
import shutil
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pvc.config.load import resolve_file
from pvc.config.pki import api_pki, ca_pem
from pvc.config.schema import API_PREFIX, ClusterFile, Node
from pvc.config.secrets import ClusterSecrets
from pvc.nodeos.formation import ceph, units
from pvc.nodeos.formation.machinery import Context, StepFailed, wait_for, write
from pvc.nodeos.storage.upload import DEFAULT_SPOOL

PVCD_UNIT = "pvc-pvcd.service"
API_UNIT = "pvc-api.service"
BIN = "/opt/pvc/bin"
API_USER = "pvc-api"  # made by the image (image/hooks/customize.sh)
API_DIR = Path("/etc/pvc/api")
API_CERT, API_KEY = API_DIR / "tls-cert.pem", API_DIR / "tls-key.pem"
API_CEPH_CONF = API_DIR / "ceph.conf"
# The API's sandbox (review M9). The master keeps only what it needs to start workers as API_USER (setuid/setgid,
# and chown for their heartbeat files); the workers, which serve every request, hold no capability at all.
API_SANDBOX = (
    "NoNewPrivileges=yes",
    "CapabilityBoundingSet=CAP_SETUID CAP_SETGID CAP_CHOWN",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "PrivateDevices=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
    "RestrictNamespaces=yes",
    "RestrictRealtime=yes",
    "RestrictSUIDSGID=yes",
    "LockPersonality=yes",
    "SystemCallArchitectures=native",
    "UMask=0077",
    f"ReadWritePaths={DEFAULT_SPOOL}",  # the upload spool on PVCDATA (owned by API_USER): the only place it writes
)


def pvcd_unit(config_path: str, node: str, watchdog_sec: int) -> str:
    """pvcd under systemd's watchdog: pvcd says it is alive only while its controllers make progress (timers.watchdog;
    docs/runtime.md), so a stalled pvcd is restarted."""
    return units.render(
        "PVC node daemon",
        [f"{BIN}/pvcd", "--config", config_path, "--node", node],
        after=("pvc-libvirtd.service",),
        watchdog_sec=watchdog_sec,
    )


def api_unit(config_path: str, node: str, tls: bool) -> str:
    env = {
        "PVC_CONFIG": config_path,
        "PVC_NODE": node,
        "PVC_API_USER": API_USER,
        "PVC_CEPH_CONF": str(API_CEPH_CONF),
    }
    if tls:
        env |= {"PVC_API_TLS_CERT": str(API_CERT), "PVC_API_TLS_KEY": str(API_KEY)}
    return units.render(
        "PVC API (gunicorn)",
        [f"{BIN}/gunicorn", "-c", "python:pvc.api.gunicorn", "pvc.api:create_app()"],
        env=env,
        after=(PVCD_UNIT,),
        service=API_SANDBOX,
    )


@dataclass(frozen=True)
class ApiFile:
    path: Path
    text: str
    mode: int  # group: API_USER


def api_files(
    cfg: ClusterFile, node: Node, join_key: str, secrets: ClusterSecrets, own_tls: tuple[str, str] | None
) -> list[ApiFile]:
    """What the API's workers read, each readable by API_USER's group: its TLS certificate and key (`own_tls`: the
    administrator's, as read from their files; else issued by the cluster CA; none with insecure_http), and a Ceph
    configuration that names a keyring of its own and logs to no file (the root is read-only to the API)."""
    files = []
    if not cfg.api.insecure_http:
        if own_tls is None:
            issued = api_pki(join_key, cfg, node)
            own_tls = (issued.cert_pem, issued.key_pem)
        files += [ApiFile(API_CERT, own_tls[0], 0o644), ApiFile(API_KEY, own_tls[1], 0o640)]
    params = dataclasses.replace(
        ceph.params_for(cfg, secrets), keyring_dir=str(API_DIR), run_dir="/tmp", extra={"log to file": "false"}
    )
    admin = {"client.admin": secrets.ceph_keys["client.admin"]}
    files += [
        ApiFile(API_CEPH_CONF, ceph.render_conf(params), 0o644),
        ApiFile(API_DIR / "ceph.client.admin.keyring", ceph.render_keyring(admin, ceph.CAPS), 0o640),
    ]
    return files


def own_tls_files(cfg: ClusterFile, config_dir: Path) -> tuple[str, str] | None:
    """The administrator's certificate and key ([api] tls_cert_file, tls_key_file), read; StepFailed naming a file
    that cannot be read."""
    if cfg.api.tls_cert_file is None or cfg.api.tls_key_file is None:
        return None
    texts = []
    for key, name in (("tls_cert_file", cfg.api.tls_cert_file), ("tls_key_file", cfg.api.tls_key_file)):
        path = resolve_file(name, config_dir)
        try:
            texts.append(path.read_text())
        except (OSError, UnicodeDecodeError) as exc:
            raise StepFailed(f"api.{key}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return texts[0], texts[1]


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
    cfg = ctx.cfg
    own = own_tls_files(cfg, ctx.config_path.parent)
    changed = False
    API_DIR.mkdir(parents=True, exist_ok=True)
    API_DIR.chmod(0o755)
    DEFAULT_SPOOL.mkdir(parents=True, exist_ok=True)  # uploads are spooled here for qemu-img, by the workers
    shutil.chown(DEFAULT_SPOOL, API_USER, API_USER)
    DEFAULT_SPOOL.chmod(0o700)
    for f in api_files(cfg, ctx.node, ctx.join_key, ctx.secrets, own):
        changed |= write(f.path, f.text, f.mode, group=API_USER)
    tls = not cfg.api.insecure_http
    changed |= units.install(API_UNIT, api_unit(str(ctx.config_path), ctx.node.name, tls))
    units.ensure_running(API_UNIT, changed)
    url = f"{'https' if tls else 'http'}://127.0.0.1:{cfg.api.port}{API_PREFIX}/health"
    context = None
    if tls and own is None:  # the certificate issued here: checked against the cluster CA, naming 127.0.0.1
        context = ssl.create_default_context(cadata=ca_pem(ctx.join_key, cfg))
    elif tls:  # the administrator's: it need not name 127.0.0.1, and its CA is theirs
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

    def healthy() -> bool:
        units.check_alive(API_UNIT)
        try:
            with urllib.request.urlopen(url, timeout=5, context=context) as resp:
                return resp.status == 200
        except urllib.error.HTTPError as exc:
            return exc.code == 503  # answering, the cluster just is not healthy yet

    wait_for(f"the API at {url}", healthy, 180, 1.0, log=lambda: units.journal(API_UNIT))
    return f"{'HTTPS' if tls else 'plain HTTP'} on port {cfg.api.port}, workers as {API_USER}"
