"""Find cluster.toml at boot, in the order of DESIGN.md decision 3, and stage it in /run/pvc.

1. kernel argument `pvc.config=URL` (http, https or file; `${mac}` and `${node}` are substituted; with `${mac}`
   every MAC the machine owns is tried),
2. a filesystem labelled `PVCCONFIG` (the USB stick's config partition or a second disk), mounted read-only,
3. a file embedded in the image at /etc/pvc/cluster.toml.

The first source that exists is used; a lower source is never consulted when a higher one is configured but
fails (a node must not form with a stale file because the URL server was briefly down). The staged directory
holds cluster.toml and every other file of the source (join key file, API key files, TLS files).
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

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


def fetch_url(template: str, macs: list[str], node: str | None, timeout: float = 10.0) -> tuple[str, bytes]:
    """The config from `pvc.config=URL`; raises Unavailable naming every URL tried and its error."""
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
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                return url, resp.read()
        except urllib.error.HTTPError as exc:
            errors.append(f"{url}: HTTP {exc.code}")
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            errors.append(f"{url}: {reason}")
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
        used, data = fetch_url(url, macs, args.get("node"))
        return Found(f"url {used}", stage(data, stage_dir))
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
