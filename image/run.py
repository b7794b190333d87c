"""Running build commands: output to a log file, failures as one `BuildError` naming the stage and the command."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path


class BuildError(Exception):
    """An expected build failure: the stage, the failing command, and the tail of its log."""

    def __init__(self, stage: str, message: str, log_tail: str = "") -> None:
        super().__init__(f"{stage}: {message}")
        self.stage = stage
        self.message = message
        self.log_tail = log_tail


class Runner:
    """Runs the commands of one stage, appending their output to `log`."""

    def __init__(self, stage: str, log: Path) -> None:
        self.stage = stage
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)

    def run(self, argv: Sequence[str | os.PathLike], *, cwd: Path | None = None, env: dict | None = None) -> None:
        args = [str(a) for a in argv]
        if shutil.which(args[0]) is None and not os.path.isabs(args[0]):
            raise BuildError(self.stage, f"missing tool {args[0]!r} (install the host packages: ci/setup.sh)")
        cmd = shlex.join(args)
        with self.log.open("a") as fh:
            fh.write(f"$ {cmd}\n")
            fh.flush()
            try:
                res = subprocess.run(
                    args, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=cwd, env=env
                )
            except OSError as exc:
                raise BuildError(self.stage, f"cannot run {cmd}: {exc}") from None
        if res.returncode != 0:
            raise BuildError(self.stage, f"command failed (exit {res.returncode}): {short(cmd)}", tail(self.log))

    def output(self, argv: Sequence[str | os.PathLike]) -> str:
        args = [str(a) for a in argv]
        res = subprocess.run(args, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            with self.log.open("a") as fh:
                fh.write(f"$ {shlex.join(args)}\n{res.stdout}{res.stderr}")
            raise BuildError(
                self.stage, f"command failed (exit {res.returncode}): {short(shlex.join(args))}", tail(self.log)
            )
        return res.stdout


def short(cmd: str, limit: int = 160) -> str:
    """A command line cut to one readable line (the log has it whole)."""
    return cmd if len(cmd) <= limit else cmd[: limit - 1] + "…"


def tail(log: Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def mounted_under(path: Path) -> list[str]:
    """Mount points at or below `path`, deepest first (the order to unmount them)."""
    prefix = str(path.resolve())
    points = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(points, key=len, reverse=True)


def unmount_all(path: Path) -> None:
    for point in mounted_under(path):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)


def remove_tree(path: Path) -> None:
    """Remove a build tree, never crossing into a mount left behind by an interrupted build (/dev, /proc...)."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_all(path)
    if mounted_under(path):
        raise RuntimeError(f"refusing to remove {path}: still mounted: {mounted_under(path)}")
    subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=False)


@contextlib.contextmanager
def mounted(runner: Runner, argv: Sequence[str | os.PathLike], target: Path) -> Iterator[Path]:
    """`mount ... target` for the duration of the block, and every mount below it unmounted afterwards."""
    target.mkdir(parents=True, exist_ok=True)
    runner.run(["mount", *argv, target])
    try:
        yield target
    finally:
        unmount_all(target)


def overlay(
    runner: Runner, lowers: Sequence[Path], target: Path, upper: Path | None = None, work: Path | None = None
) -> contextlib.AbstractContextManager[Path]:
    """An overlayfs over `lowers` (first = top): writable into `upper` when given, read-only otherwise."""
    opts = "lowerdir=" + ":".join(str(p) for p in lowers)
    if upper is not None:
        assert work is not None
        upper.mkdir(parents=True, exist_ok=True)
        work.mkdir(parents=True, exist_ok=True)
        opts += f",upperdir={upper},workdir={work}"
    else:
        opts += ",ro" if len(lowers) > 1 else ""
        if len(lowers) == 1:
            # overlayfs needs two lower layers for a read-only mount without an upper: bind-mount instead.
            return mounted(runner, ["--bind", "-o", "ro", lowers[0]], target)
    return mounted(runner, ["-t", "overlay", "overlay", "-o", opts], target)


CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# Environment passed from the host into chroot commands that reach the network (proxies, pip's timeout).
PASS_ENV = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "PIP_DEFAULT_TIMEOUT")


def host_ca_bundle() -> str | None:
    """The CA bundle the host's own tools trust (it may hold a proxy's CA)."""
    for var in ("PIP_CERT", "REQUESTS_CA_BUNDLE", "SSL_CERT_FILE"):
        if os.environ.get(var) and os.path.isfile(os.environ[var]):
            return os.environ[var]
    return CA_BUNDLE if os.path.isfile(CA_BUNDLE) else None


def network_env() -> list[str]:
    """`VAR=value` words for `env`: the host's proxy settings and pip pointed at the (mounted) CA bundle."""
    words = [f"{var}={os.environ[var]}" for var in PASS_ENV if os.environ.get(var)]
    return [*words, f"PIP_CERT={CA_BUNDLE}"]


@contextlib.contextmanager
def chroot_mounts(runner: Runner, root: Path, network: bool = False) -> Iterator[Path]:
    """/proc, /sys, /dev for commands run with chroot in `root`. With `network`, also the host's resolv.conf and CA
    bundle (a proxy's CA may be in it) mounted over the root's own, read-only: nothing of the host stays behind."""
    try:
        runner.run(["mount", "-t", "proc", "proc", root / "proc"])
        runner.run(["mount", "-t", "sysfs", "sysfs", root / "sys"])
        runner.run(["mount", "--rbind", "/dev", root / "dev"])
        runner.run(["mount", "--make-rslave", root / "dev"])
        if network:
            runner.run(["mount", "--bind", "-o", "ro", "/etc/resolv.conf", root / "etc/resolv.conf"])
            bundle = host_ca_bundle()
            if bundle and (root / CA_BUNDLE.lstrip("/")).is_file():
                runner.run(["mount", "--bind", "-o", "ro", bundle, root / CA_BUNDLE.lstrip("/")])
        yield root
    finally:
        for sub in (CA_BUNDLE.lstrip("/"), "etc/resolv.conf", "dev", "sys", "proc"):
            for point in mounted_under(root / sub):
                subprocess.run(["umount", "-l", point], check=False, capture_output=True)
