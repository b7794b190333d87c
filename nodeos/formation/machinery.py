"""The formation graph's machinery: a step is a name, a condition and a function that renders, applies, starts and
waits on a real readiness probe. Steps run in order; each one is idempotent, so a reboot re-runs the graph and changes
nothing that is already right (DESIGN.md decision 5).

Every step has a deadline (`Step.timeout`) for the whole of it: render, apply, start and probe. `run_step` runs the
step in a thread of its own and waits for it until the deadline; inside the step, `run` (subprocesses) and `wait_for`
(probes) never wait past it, so a slow service fails with its own message. A call Python cannot interrupt (libvirt,
librados, a kazoo call without a timeout) is bounded by the thread: at the deadline the step fails with what it was
doing (`doing`, `Watch.describe`), and `pvc-node` exits, which ends the stuck thread and, through systemd's cgroup,
anything it started.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kazoo.client import KazooClient

from pvc.config.schema import ClusterFile, Node
from pvc.config.secrets import ClusterSecrets
from pvc.nodeos.boot import data
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
    data: data.Outcome | None = None  # what the data step found or made (recorded in ZooKeeper once it is up)

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
    timeout: float = 300.0  # seconds for the whole step (render, apply, start, probe): enforced by run_step


# -- deadlines ---------------------------------------------------------------------------------------------------
GRACE = 5.0  # seconds run_step waits past the deadline for the step to fail by itself with its own message


@dataclass
class Watch:
    """The running step's deadline and what it is doing now, innermost last (for the message when the deadline
    passes): e.g. waiting for libvirtd to answer, inside that running `virsh version`."""

    step: str
    deadline: float  # time.monotonic()
    activities: list[tuple[str, float]] = field(default_factory=list)  # (what, since)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def describe(self) -> str:
        if not self.activities:
            return "the step's own code (no subprocess or probe was running)"
        now = time.monotonic()
        return "; inside that, ".join(f"{what} (for {now - since:.0f} s)" for what, since in self.activities)


_local = threading.local()


def watch() -> Watch | None:
    """The deadline of the formation step running in this thread; None outside formation (pvcd reuses these
    helpers for `pvc storage osd add`)."""
    return getattr(_local, "watch", None)


@contextlib.contextmanager
def doing(activity: str) -> Iterator[None]:
    """Say what the step is busy with until the block ends (named when the step's deadline passes)."""
    w = watch()
    if w is None:
        yield
        return
    w.activities.append((activity, time.monotonic()))
    depth = len(w.activities)
    try:
        yield
    finally:
        del w.activities[depth - 1 :]


def bounded(timeout: float) -> float:
    """`timeout`, cut to what is left of the running step's deadline. StepFailed when nothing is left."""
    w = watch()
    if w is None:
        return timeout
    left = w.left()
    if left <= 0:
        raise StepFailed(f"the step's deadline has passed; it was at: {w.describe()}")
    return min(timeout, left)


def run_step(name: str, timeout: float, fn: Callable[[], str | None]) -> str | None:
    """Run `fn` as the step `name` with a deadline of `timeout` seconds; StepFailed naming what it waited on when the
    deadline passes. The step runs in its own (daemon) thread, so a call that cannot be interrupted is left behind:
    the caller must end the process after a failure (pvc-node does)."""
    w = Watch(step=name, deadline=time.monotonic() + timeout)
    result: dict[str, Any] = {}

    def target() -> None:
        _local.watch = w
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread as it is
            result["error"] = exc

    thread = threading.Thread(target=target, name=f"step-{name}", daemon=True)
    thread.start()
    thread.join(timeout + GRACE)
    if thread.is_alive():
        raise StepFailed(f"did not finish within its deadline of {timeout:.0f} s; stuck in {w.describe()}")
    if "error" in result:
        raise result["error"]
    return result.get("value")


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
    """Run a command (never past the running step's deadline); StepFailed on a timeout or, with `check`, a failure."""
    timeout = bounded(timeout)
    try:
        with doing(f"running `{' '.join(argv)}`"):
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
    """Call `probe` until it returns a truthy value; StepFailed naming `what` and the last error after `timeout` (or
    at the running step's deadline, whichever comes first)."""
    timeout = bounded(timeout)
    started = time.monotonic()
    deadline = started + timeout
    last = "no answer yet"
    while True:
        with doing(f"waiting for {what} ({time.monotonic() - started:.0f} s so far; last probe: {last}), in a probe"):
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
            raise StepFailed(f"timed out after {time.monotonic() - started:.0f} s waiting for {what}: {last}", log())
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
