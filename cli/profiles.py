"""Connection profiles: where a cluster's API is and which key to use.

Stored in `$PVC_CLIENT_DIR/connections.json`, else `~/.config/pvc/connections.json` (folder mode 0700, file mode
0600: the file holds API keys). One profile is the default. This module holds no Click commands (those are in
`pvc.cli.connection`) and imports nothing heavy.
"""

from __future__ import annotations

import json
import os
import re
import stat
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import click

from pvc.cli.errors import Failure

FILE_NAME = "connections.json"
DEFAULT_PORT = 7370
ENV_DIR = "PVC_CLIENT_DIR"
ENV_CONNECTION = "PVC_CONNECTION"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
ADD_HINT = "pvc connection add NAME --address ADDRESS --key KEY"


@dataclass
class Connection:
    name: str
    url: str  # scheme://host:port[/prefix]; the API lives under {url}/api/v1
    key: str = ""
    verify: bool = True  # verify the API's TLS certificate
    ca_file: str | None = None  # CA bundle to verify it with, instead of the system's
    ca_pem: str | None = None  # the cluster CA certificate, pinned (`add --from-config` derives it from the join key)
    proxy: bool = False  # go through the proxy of $https_proxy / $http_proxy (default: never)
    description: str = ""

    def record(self) -> dict[str, object]:
        data = asdict(self)
        del data["name"]
        return data


@dataclass
class Profiles:
    connections: dict[str, Connection] = field(default_factory=dict)
    default: str | None = None


def client_dir() -> Path:
    if os.environ.get(ENV_DIR):
        return Path(os.environ[ENV_DIR])
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "pvc"


def profiles_path() -> Path:
    return client_dir() / FILE_NAME


def check_name(name: str) -> str | None:
    """Why `name` cannot name a connection, or None."""
    if not NAME_PATTERN.match(name):
        return "a connection name is 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
    return None


def build_url(address: str, port: int = DEFAULT_PORT, tls: bool = True) -> str:
    """The base URL of an API at `address` (a host name, an IPv4 or IPv6 address, or already a URL)."""
    if "://" in address:
        return address.rstrip("/")
    host = f"[{address}]" if ":" in address and not address.startswith("[") else address
    return f"{'https' if tls else 'http'}://{host}:{port}"


def check_url(url: str) -> str | None:
    """Why `url` cannot be a connection's URL, or None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        return f"'{url}' is not a valid URL: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"'{url}': the scheme must be http or https"
    if not parts.hostname:
        return f"'{url}' names no host"
    if parts.query or parts.fragment:
        return f"'{url}' must not have a query or fragment"
    return None


def _bad(path: Path, why: str) -> Failure:
    return Failure(f"{path}: {why} (fix or remove the file; it is written by `pvc connection add`)")


def load() -> Profiles:
    """The stored profiles; none if the file does not exist. A damaged file is a Failure naming it."""
    path = profiles_path()
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except FileNotFoundError:
        return Profiles()
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        click.echo(f"pvc: warning: {path} holds API keys but others may read it: chmod 600 {path}", err=True)
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise _bad(path, f"not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("connections", {}), dict):
        raise _bad(path, "expected an object with a 'connections' object")
    out = Profiles(default=data.get("default") if isinstance(data.get("default"), str) else None)
    for name, record in data.get("connections", {}).items():
        if not isinstance(record, dict) or not isinstance(record.get("url"), str):
            raise _bad(path, f"connection '{name}' has no 'url' string")
        try:
            out.connections[name] = Connection(
                name=name,
                url=record["url"],
                key=str(record.get("key") or ""),
                verify=bool(record.get("verify", True)),
                ca_file=record.get("ca_file") or None,
                ca_pem=record.get("ca_pem") or None,
                proxy=bool(record.get("proxy", False)),
                description=str(record.get("description") or ""),
            )
        except TypeError as exc:
            raise _bad(path, f"connection '{name}': {exc}") from None
    if out.default not in out.connections:
        out.default = None
    return out


def save(profiles: Profiles) -> Path:
    """Write the profiles atomically: a 0600 file in a 0700 folder (created if missing)."""
    path = profiles_path()
    folder = path.parent
    try:
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True)
            os.chmod(folder, 0o700)  # mkdir's mode is filtered by the umask
        document = {
            "default": profiles.default,
            "connections": {name: c.record() for name, c in sorted(profiles.connections.items())},
        }
        fd, tmp = tempfile.mkstemp(prefix=".connections-", suffix=".tmp", dir=folder)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(document, fh, indent=2)
                fh.write("\n")
            os.chmod(tmp, 0o600)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise Failure(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def select(name: str | None, environ: dict[str, str] | None = None) -> Connection:
    """The connection to use: `name` (-c/--connection), then $PVC_CONNECTION, then the default profile."""
    env = os.environ if environ is None else environ
    source = "-c/--connection"
    if not name and env.get(ENV_CONNECTION):
        name, source = env[ENV_CONNECTION], ENV_CONNECTION
    profiles = load()
    if name:
        if name in profiles.connections:
            return profiles.connections[name]
        known = ", ".join(sorted(profiles.connections)) or f"none: add one with `{ADD_HINT}`"
        raise Failure(f"no connection named '{name}' (from {source}); known connections: {known}")
    if not profiles.connections:
        raise Failure(f"no connection: add one with `{ADD_HINT}`")
    if profiles.default is None:
        raise Failure(
            "no default connection: pass -c NAME, set PVC_CONNECTION, or choose one with "
            f"`pvc connection default NAME` (known: {', '.join(sorted(profiles.connections))})"
        )
    return profiles.connections[profiles.default]


def mask(key: str) -> str:
    if not key:
        return "-"
    return "****" + key[-4:] if len(key) >= 16 else "****"
