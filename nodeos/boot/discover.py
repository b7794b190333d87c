"""Find cluster.toml at boot, in the order of DESIGN.md decision 3, and stage it in /run/pvc.

1. kernel argument `pvc.config=URL` (http, https or file; `${mac}` and `${node}` are substituted; with `${mac}`
   every MAC the machine owns is tried),
2. a filesystem labelled `PVCCONFIG` (the USB stick's config partition or a second disk), mounted read-only,
3. a file embedded in the image at /etc/pvc/cluster.toml.

The first source that exists is used; a lower source is never consulted when a higher one is configured but
fails (a node must not form with a stale file because the URL server was briefly down). The staged directory
holds cluster.toml and every other file of the source (join key file, API key files, TLS files).

A config fetched from a URL (docs/image.md, "PXE"; review H4):

- `pvc.config_sha256=HEX`: the file's SHA-256; a file with another digest is refused (integrity, also over http);
- `pvc.config_pin=HEX`: the SHA-256 fingerprint of the https server's certificate (colons allowed), checked instead
  of the system's CAs, so a self-signed provisioning server is authenticated (confidentiality and integrity);
- the join key stays off the network: when the config names `join_key_file`, that file comes from a PVCCONFIG
  filesystem (a USB stick holding only the key will do) or from `pvc.join_key=URL` (https, pinned by
  `pvc.join_key_pin=` or else `pvc.config_pin=`; or file);
- a config fetched over plain http that holds the join key inline is refused (startup.py says what to do).

Nothing here ever prints a file's contents: messages name sources, digests and fingerprints only.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

from pvc.nodeos.boot import cmdline

LABEL = "PVCCONFIG"
LABEL_PATHS = (Path("/dev/disk/by-label") / LABEL,)
EMBEDDED = Path("/etc/pvc/cluster.toml")
STAGE = Path("/run/pvc")
FILENAME = "cluster.toml"


class Unavailable(Exception):
    """No usable config yet: the message says which source was tried and what is wrong; the caller retries."""


@dataclass(frozen=True)
class Found:
    source: str  # "url <URL>", "label PVCCONFIG on /dev/...", "embedded /etc/pvc/cluster.toml"
    path: Path  # the staged cluster.toml
    url: str | None = None  # the URL it was fetched from (a URL source)


def plain_http(url: str | None) -> bool:
    """Whether `url` crossed the network in clear."""
    return url is not None and urlsplit(url).scheme == "http"


def pin_of(text: str) -> str:
    """A certificate fingerprint as given (hex, colons or not, any case) -> 64 lower-case hex characters."""
    pin = text.replace(":", "").strip().lower()
    if len(pin) != 64 or any(c not in "0123456789abcdef" for c in pin):
        raise Unavailable(f"'{text}' is not a SHA-256 fingerprint (64 hex characters, colons allowed)")
    return pin


def _pinned_get(url: str, pin: str, timeout: float) -> bytes:
    """GET an https URL from a server whose certificate has the SHA-256 fingerprint `pin` (any issuer, any name:
    the pin is the trust)."""
    parts = urlsplit(url)
    if parts.scheme != "https":
        raise Unavailable(f"{url}: a certificate pin needs an https URL")
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    conn = http.client.HTTPSConnection(parts.hostname or "", parts.port or 443, timeout=timeout, context=ctx)
    try:
        conn.connect()
        assert conn.sock is not None
        served = hashlib.sha256(conn.sock.getpeercert(binary_form=True) or b"").hexdigest()
        if served != pin:
            raise Unavailable(
                f"{url}: the server's certificate has the SHA-256 fingerprint {served}, not the pinned {pin}: "
                "refusing to fetch from it"
            )
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else "") or "/")
        resp = conn.getresponse()
        if resp.status != 200:
            raise Unavailable(f"{url}: HTTP {resp.status}")
        return resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Unavailable(f"{url}: {exc}") from None
    finally:
        conn.close()


def get(url: str, pin: str | None, timeout: float) -> bytes:
    """The body at `url` (http, https or file), from a server with the pinned certificate if `pin` is given.
    Raises Unavailable naming the URL."""
    if pin is not None:
        return _pinned_get(url, pin, timeout)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        raise Unavailable(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise Unavailable(f"{url}: {getattr(exc, 'reason', exc)}") from None


def fetch_url(
    template: str,
    macs: list[str],
    node: str | None,
    timeout: float = 10.0,
    pin: str | None = None,
    sha256: str | None = None,
) -> tuple[str, bytes]:
    """The config from `pvc.config=URL` (`pin`: the https server's certificate fingerprint; `sha256`: the file's
    digest); raises Unavailable naming every URL tried and its error."""
    candidates: list[str] = []
    tried: list[str | None] = [*macs] if macs else [None]
    for mac in tried:
        url = cmdline.expand(template, mac=mac, node=node)
        if url is not None and url not in candidates:
            candidates.append(url)
    if not candidates:
        raise Unavailable(f"pvc.config={template} needs ${{node}} or ${{mac}}, but neither is known")
    errors = []
    for url in candidates:
        try:
            data = get(url, pin, timeout)
        except Unavailable as exc:
            errors.append(str(exc))
            continue
        digest = hashlib.sha256(data).hexdigest()
        if sha256 is not None and digest != sha256:
            raise Unavailable(
                f"the cluster.toml at {url} has the SHA-256 {digest}, not the {sha256} pvc.config_sha256 names: "
                "refusing it (was it changed, or replaced on its way?)"
            )
        return url, data
    raise Unavailable("cannot fetch cluster.toml: " + "; ".join(errors))


def label_device(paths: tuple[Path, ...] = LABEL_PATHS) -> Path | None:
    for path in paths:
        if path.exists():
            return path
    try:
        out = subprocess.run(["blkid", "-L", LABEL], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    dev = out.stdout.strip()
    return Path(dev) if out.returncode == 0 and dev else None


def copy_from_device(device: Path, into: Path) -> None:
    """Mount `device` read-only, copy its files into `into`, unmount. Raises Unavailable."""
    with tempfile.TemporaryDirectory(prefix="pvcconfig.", dir="/run") as mnt:
        out = subprocess.run(["mount", "-o", "ro", str(device), mnt], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise Unavailable(f"cannot mount {LABEL} ({device}): {out.stderr.strip()}")
        try:
            if not (Path(mnt) / FILENAME).is_file():
                raise Unavailable(f"{LABEL} ({device}) holds no {FILENAME}")
            shutil.copytree(mnt, into, dirs_exist_ok=True)
        finally:
            subprocess.run(["umount", mnt], capture_output=True, timeout=60)


def stage(files: Path | bytes, stage_dir: Path) -> Path:
    """Replace `stage_dir` with a directory holding `files` (a source directory, or cluster.toml's bytes)."""
    stage_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".pvc.", dir=stage_dir.parent))
    if isinstance(files, bytes):
        (tmp / FILENAME).write_bytes(files)
    else:
        shutil.copytree(files, tmp, dirs_exist_ok=True)
    tmp.chmod(0o700)
    old = stage_dir.with_name(stage_dir.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if stage_dir.exists():
        stage_dir.rename(old)
    tmp.rename(stage_dir)
    shutil.rmtree(old, ignore_errors=True)
    return stage_dir / FILENAME


def discover(args: dict[str, str], macs: list[str], stage_dir: Path | None = None) -> Found:
    """One attempt over the sources in order. Raises Unavailable with what was tried."""
    stage_dir = stage_dir or STAGE
    url = args.get("config")
    if url:
        pin = pin_of(args["config_pin"]) if args.get("config_pin") else None
        digest = pin_of(args["config_sha256"]) if args.get("config_sha256") else None
        used, data = fetch_url(url, macs, args.get("node"), pin=pin, sha256=digest)
        return Found(f"url {used}", stage(data, stage_dir), url=used)
    device = label_device()
    if device is not None:
        with tempfile.TemporaryDirectory(prefix="pvcconfig-copy.", dir="/run") as tmp:
            copy_from_device(device, Path(tmp))
            return Found(f"label {LABEL} on {device}", stage(Path(tmp), stage_dir))
    if EMBEDDED.is_file():
        return Found(f"embedded {EMBEDDED}", stage(EMBEDDED.parent, stage_dir))
    raise Unavailable(
        f"no cluster.toml: no pvc.config=URL on the kernel command line, no filesystem labelled {LABEL}, "
        f"and no {EMBEDDED} in the image"
    )


# -- the join key of a config fetched from a URL -----------------------------------------------------------------------
def stage_join_key(args: dict[str, str], name: str, stage_dir: Path, timeout: float = 10.0) -> str:
    """Put the join key file `name` (cluster.toml's relative join_key_file) into `stage_dir`, from `pvc.join_key=URL`
    or a PVCCONFIG filesystem, for a config that came from a URL. Returns where it came from; Unavailable says what
    to provide. The key itself is never shown."""
    relative = PurePosixPath(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise Unavailable(f"join_key_file '{name}' must be a plain relative name to come from a PVCCONFIG stick")
    target = stage_dir / relative
    key_url = args.get("join_key")
    if key_url:
        if plain_http(key_url):
            raise Unavailable(
                f"pvc.join_key={key_url} is plain http: the join key must not cross the network in clear; serve it "
                "over https (with pvc.join_key_pin= for a self-signed server) or put it on a PVCCONFIG stick"
            )
        pin_text = args.get("join_key_pin") or args.get("config_pin")
        data = get(key_url, pin_of(pin_text) if pin_text else None, timeout)
        _write_private(target, data)
        return f"url {key_url}"
    device = label_device()
    if device is None:
        raise Unavailable(
            f"cluster.toml names join_key_file '{name}', which a URL cannot bring: give the key on a filesystem "
            f"labelled {LABEL} (a USB stick holding only {name} will do), or as pvc.join_key=https://..."
        )
    with tempfile.TemporaryDirectory(prefix="pvcconfig.", dir="/run") as mnt:
        out = subprocess.run(["mount", "-o", "ro", str(device), mnt], capture_output=True, text=True, timeout=60)
        if out.returncode != 0:
            raise Unavailable(f"cannot mount {LABEL} ({device}): {out.stderr.strip()}")
        try:
            source = Path(mnt) / relative
            if not source.is_file():
                raise Unavailable(f"{LABEL} ({device}) holds no {name}, the join_key_file cluster.toml names")
            _write_private(target, source.read_bytes())
        finally:
            subprocess.run(["umount", mnt], capture_output=True, timeout=60)
    return f"label {LABEL} on {device}"


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
