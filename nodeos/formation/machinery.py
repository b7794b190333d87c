"""The formation graph's machinery: a step is a name, a condition and a function that renders, applies, starts and
waits on a real readiness probe. Steps run in order; each one is idempotent, so a reboot re-runs the graph and changes
nothing that is already right (DESIGN.md decision 5).
"""

from __future__ import annotations

import grp
import os
import pwd
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from pvc.config.schema import ClusterFile, Node
from pvc.config.secrets import ClusterSecrets
from pvc.nodeos.state.store import ClusterState


class StepFailed(Exception):
    """A formation step failed: `message` says what, `log` is the tail of the relevant log."""

    def __init__(self, message: str, log: str = "") -> None:
        super().__init__(message)
        self.log = log


@dataclass
class Context:
    cfg: ClusterFile
    node: Node
    config_path: Path
    join_key: str = field(repr=False)  # never printed, never logged
    secrets: ClusterSecrets = field(repr=False)
    say: Callable[[str], None] = print
    zk: KazooClient | None = None  # a started client once the zookeeper-client step has run

    @property
    def state(self) -> ClusterState:
        """The cluster state, from the zookeeper-client step on."""
        if self.zk is None:
            raise StepFailed("not connected to ZooKeeper: the zookeeper-client step has not run")
        return ClusterState(self.zk)


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[Context], str | None]  # returns a short result message
    when: Callable[[Context], bool] = lambda ctx: True


def write(path: str | Path, text: str, mode: int = 0o644, owner: str = "root", group: str = "root") -> bool:
    """Write `text` to `path` if it differs; True if the file changed. Parents are created; the mode, owner and group
    of a file already right are corrected in place.

    The new contents go to a file made beside `path` under a random name (O_EXCL, mode 0600: mkstemp), given to its
    owner and group and its final mode before a byte is written, then renamed over `path`: a keyring is never
    readable by others, not even for a moment, and no one can plant the temporary file (review L3)."""
    path = Path(path)
    uid, gid = _ids(owner, group)
    try:
        if path.read_text() == text:
            st = path.stat()
            if (st.st_mode & 0o777) != mode:
                path.chmod(mode)
            if (st.st_uid, st.st_gid) != (uid, gid):
                os.chown(path, uid, gid)
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".pvc-tmp", dir=path.parent)
    try:
        if (uid, gid) != (os.geteuid(), os.getegid()):
            os.fchown(fd, uid, gid)
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return True


def _ids(owner: str, group: str) -> tuple[int, int]:
    try:
        return pwd.getpwnam(owner).pw_uid, grp.getgrnam(group).gr_gid
    except KeyError:
        raise StepFailed(f"no user '{owner}' or no group '{group}' on this system (the image makes them)") from None


def run(*argv: str, timeout: float = 120, check: bool = True, input: str | None = None) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, input=input)
    except subprocess.TimeoutExpired:
        raise StepFailed(f"{' '.join(argv)} did not finish in {timeout:.0f} s") from None
    except OSError as exc:
        raise StepFailed(f"cannot run {argv[0]}: {exc.strerror}") from None
    if check and out.returncode != 0:
        raise StepFailed(f"{' '.join(argv)} failed (exit {out.returncode})", (out.stderr or out.stdout)[-2000:])
    return out.stdout


def wait_for(
    what: str, probe: Callable[[], Any], timeout: float, interval: float = 1.0, log: Callable[[], str] = str
) -> Any:
    """Call `probe` until it returns a truthy value; StepFailed naming `what` and the last error after `timeout`."""
    deadline = time.monotonic() + timeout
    last = "no answer yet"
    while True:
        try:
            value = probe()
            if value:
                return value
            last = f"not yet ({value!r})"
        except StepFailed as exc:
            last = f"{exc} {exc.log.strip()[-300:]}".strip()
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            raise StepFailed(f"timed out after {timeout:.0f} s waiting for {what}: {last}", log())
        time.sleep(interval)
