"""`pvc-lab`: N nodes of the real image on one machine, with simulated BMCs, formed from one cluster.toml.

    pvc-lab up [--nodes N] [--backend container|vm] [--config FILE]
    pvc-lab status [--format json]      pvc-lab ssh NODE [-- CMD]
    pvc-lab kill NODE                   pvc-lab start NODE          pvc-lab down

The `container` backend boots the image's root with systemd-nspawn (labcontainer.py). Power goes through each node's
BMC over real IPMI (labsupervisor.py). Everything lives in network namespaces the lab creates (labnet.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import click

from pvc.config.load import load
from pvc.config.resolve import read_join_key
from pvc.config.schema import ClusterFile
from pvc.installer import labnet
from pvc.installer.labnet import LabError

REPO = Path(__file__).resolve().parent.parent
LAB_DIR = Path(os.environ.get("PVC_LAB_DIR", "/var/lib/pvc-lab"))
LAB_NS = os.environ.get("PVC_LAB_NS", "pvclab")
DEFAULT_CONFIGS = {1: REPO / "examples" / "lab-1node.toml", 3: REPO / "examples" / "lab-3node.toml"}
# the vm backend's NICs get the names udev gives them under QEMU (enp0s16...; see labvm.nic_name)
DEFAULT_VM_CONFIGS = {1: REPO / "examples" / "lab-vm-1node.toml", 3: REPO / "examples" / "lab-vm-3node.toml"}
DATA_DISK_SIZE = 8 * 1024**3
OSD_DISK_SIZE = 12 * 1024**3
SPARE_DISK_SIZE = 8 * 1024**3
CONFIG_DISK_SIZE = 16 * 1024**2
DONE = "PVC-FORMATION-DONE"
FAILED = "PVC-FORMATION-FAILED"
WAITING = "PVC-CONFIG-WAITING"


def sh(*argv: str, check: bool = True, input: str | None = None) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, input=input)
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def lab_file() -> Path:
    return LAB_DIR / "lab.json"


def read_lab() -> dict:
    try:
        return json.loads(lab_file().read_text())
    except FileNotFoundError:
        raise LabError(f"no lab is up (no {lab_file()}); start one with: pvc-lab up") from None


def power() -> dict:
    """node -> {power, nspawn_pid, init_pid, updated}, as each node's supervisor last wrote it."""
    out = {}
    for path in LAB_DIR.glob("*/power.json"):
        try:
            out[path.parent.name] = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
    return out


def load_config(path: Path) -> ClusterFile:
    result = load(path)
    if not result.valid or result.config is None:
        raise LabError("invalid cluster.toml:\n" + "\n".join(p.format(str(path)) for p in result.errors))
    return result.config


# -- disks -----------------------------------------------------------------------------------------------------------
def sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def losetup(path: Path) -> str:
    return sh("losetup", "--find", "--show", "--partscan", str(path)).strip()


def config_disk(path: Path, config: Path, cfg: ClusterFile) -> None:
    """An ext4 filesystem labelled PVCCONFIG holding cluster.toml and the files it names (join key file). ext4, not
    vfat: the lab host's kernel may lack vfat, and an ext4 image has no boot sector a BIOS could try to boot."""
    import tempfile

    path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(config, Path(tmp) / "cluster.toml")
        if cfg.cluster.join_key_file is not None:
            key = config.parent / str(cfg.cluster.join_key_file)
            (Path(tmp) / key.relative_to(config.parent)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(key, Path(tmp) / key.relative_to(config.parent))
        sparse(path, CONFIG_DISK_SIZE)
        sh("mke2fs", "-q", "-t", "ext4", "-L", "PVCCONFIG", "-d", tmp, str(path))


# -- up --------------------------------------------------------------------------------------------------------------
def build_image(say):  # type: ignore[no-untyped-def]  # -> pvc.image.build.Artifacts
    from pvc.image.build import build
    from pvc.image.run import BuildError

    out = Path(os.environ.get("PVC_IMAGE_OUT", str(REPO / "build" / "image")))
    try:
        return build(out, progress=lambda m: say(f"image: {m}"))
    except BuildError as exc:
        raise LabError(f"the image build failed: {exc.stage}: {exc.message}\n{exc.log_tail}") from None


def up(
    config: Path,
    backend: str,
    api_port: int,
    timeout: float,
    squashfs: Path | None,
    say=click.echo,
    boot: str = "kernel",
    until: str | None = None,
) -> None:  # type: ignore[no-untyped-def]
    tools = ["systemd-nspawn", "losetup"] if backend == "container" else ["qemu-system-x86_64"]
    if backend == "vm" and boot.startswith("pxe-"):
        tools.append("dnsmasq")
    for tool in [*tools, "mke2fs", "socat", "ipmitool"]:
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is not installed: run bash ci/setup.sh")
    cfg = load_config(config)
    if lab_file().exists():
        raise LabError(f"a lab is already up ({lab_file()}): pvc-lab down first")
    artifacts = None
    if squashfs is None or backend == "vm":
        artifacts = build_image(say)
        squashfs = squashfs or Path(artifacts.squashfs)
    LAB_DIR.mkdir(parents=True, exist_ok=True)
    root = LAB_DIR / "root"
    root.mkdir(exist_ok=True)
    lab: dict = {
        "backend": backend,
        "boot": boot,
        "config": str(config.resolve()),
        "lab_ns": LAB_NS,
        "root": str(root),
        "api_port": api_port,
        "nodes": [],
        "loops": [],
        "started": time.time(),
    }
    lab_file().write_text(json.dumps(lab))  # from here on, `pvc-lab down` can clean up whatever follows
    if backend == "container":
        sh("mount", "-o", "loop,ro", "-t", "squashfs", str(squashfs), str(root))
        lab["mounted"] = True
    net = labnet.plan(cfg, LAB_NS)
    lab["net"] = {"bridges": net.bridges}
    _save(lab)
    labnet.create(net, cfg.nodes, taps=backend == "vm")
    for node in cfg.nodes:
        ndir = LAB_DIR / node.name
        ndir.mkdir(exist_ok=True)
        sparse(ndir / "data.img", DATA_DISK_SIZE)
        for i, _ in enumerate(node.osds):
            sparse(ndir / f"osd{i}.img", OSD_DISK_SIZE)
        config_disk(ndir / "config.img", config, cfg)
        ipmi = node.ipmi
        entry = {
            "name": node.name,
            "id": node.id,
            "netns": net.node_ns(node.name),
            "console_log": str(ndir / "console.log"),
            "dir": str(ndir),
            "disks": {
                "data": str(ndir / "data.img"),
                "osds": [str(ndir / f"osd{i}.img") for i, _ in enumerate(node.osds)],
                "config": str(ndir / "config.img"),
            },
            "nics": net.nics[node.name],
            "ip": str(node.ip.upstream),
            "bmc": {
                "address": ipmi.address if ipmi else f"127.0.0.{node.id + 1}",
                "port": ipmi.port if ipmi else 623,
                "username": ipmi.username if ipmi else "admin",
                "password": (ipmi.password if ipmi else None) or "pvc-lab-bmc",
            },
        }
        if backend == "vm":
            from pvc.installer import labvm

            entry["vm"] = labvm.prepare_node(lab, entry, artifacts, boot)
            lab["nodes"].append(entry)
            _save(lab)
            continue
        binds = []
        data_loop = losetup(ndir / "data.img")
        lab["loops"].append(data_loop)
        binds.append((data_loop, f"/dev/disk/by-id/virtio-pvc-data-{node.name}"))
        sparse(ndir / "spare0.img", SPARE_DISK_SIZE)  # blank, for trying `pvc storage osd add`
        spare = losetup(ndir / "spare0.img")
        lab["loops"].append(spare)
        binds.append((spare, f"/dev/disk/by-id/virtio-pvc-spare0-{node.name}"))
        for i, _ in enumerate(node.osds):
            loop = losetup(ndir / f"osd{i}.img")
            lab["loops"].append(loop)
            binds.append((loop, f"/dev/disk/by-id/virtio-pvc-osd{i}-{node.name}"))
        cfg_loop = losetup(ndir / "config.img")
        lab["loops"].append(cfg_loop)
        binds.append((cfg_loop, "/dev/disk/by-label/PVCCONFIG"))
        if os.path.exists("/dev/kvm"):
            binds.append(("/dev/kvm", "/dev/kvm"))
        entry["binds"] = binds
        lab["nodes"].append(entry)
        _save(lab)
    log = open(LAB_DIR / "supervisor.log", "ab")  # noqa: SIM115 - handed to the child
    for entry in lab["nodes"]:  # one supervisor (BMC + power) per node
        sup = subprocess.Popen(
            [sys.executable, "-m", "pvc.installer.labsupervisor", str(LAB_DIR), entry["name"]],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        entry["supervisor_pid"] = sup.pid
    fwd = subprocess.Popen(
        [
            "socat",
            f"TCP-LISTEN:{api_port},bind=127.0.0.1,reuseaddr,fork",
            f"EXEC:ip netns exec {LAB_NS} socat STDIO TCP\\:{cfg.network.upstream.floating_ip}\\:{cfg.api.port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    lab["forward_pid"] = fwd.pid
    _save(lab)
    register_connection(cfg, config, api_port)
    say(f"lab: {len(cfg.nodes)} node(s) powered on; API will be at http://127.0.0.1:{api_port} (connection 'lab')")
    started = time.monotonic()
    wait_formed(lab, timeout, say, until)
    if until is None:
        key = initial_key(cfg, config)
        wait_healthy(api_port, key, max(60.0, timeout - (time.monotonic() - started)), say)


def initial_key(cfg: ClusterFile, config: Path) -> str:
    from pvc.config.secrets import initial_api_key

    return initial_api_key(read_join_key(cfg, config.parent))


def api_get(api_port: int, key: str, path: str) -> dict:
    import urllib.request

    req = urllib.request.Request(f"http://127.0.0.1:{api_port}/api/v1{path}", headers={"X-Api-Key": key})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def wait_healthy(api_port: int, key: str, timeout: float, say) -> None:  # type: ignore[no-untyped-def]
    """After formation: the primary's API answers through the forward, every node runs, no fault is open, and
    Ceph reports HEALTH_OK (as the primary publishes it every keepalive)."""
    deadline = time.monotonic() + timeout
    last: object = "no answer"
    while time.monotonic() < deadline:
        try:
            status = api_get(api_port, key, "/cluster")
            storage = api_get(api_port, key, "/storage")
            if status.get("health") == "ok" and storage.get("health") == "HEALTH_OK":
                nodes = status.get("nodes", {}).get("total")
                say(
                    f"lab: healthy: primary {status.get('primary')}, {nodes} node(s) running, Ceph HEALTH_OK "
                    f"({storage.get('osds_up')}/{storage.get('osds')} OSDs up), API on port {api_port}"
                )
                return
            last = {"cluster": status.get("health"), "ceph": storage.get("health"), "checks": storage.get("checks")}
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(2)
    raise LabError(f"the cluster formed but is not healthy after {timeout:.0f} s: {last}")


def _save(lab: dict) -> None:
    tmp = LAB_DIR / ".lab.json"
    tmp.write_text(json.dumps(lab, indent=1))
    tmp.replace(lab_file())


def register_connection(cfg: ClusterFile, config: Path, api_port: int) -> None:
    from pvc.cli import profiles

    key = initial_key(cfg, config)
    saved = profiles.load()
    saved.connections["lab"] = profiles.Connection(
        name="lab", url=f"http://127.0.0.1:{api_port}", key=key, description=f"pvc-lab ({cfg.cluster.name})"
    )
    if saved.default is None:
        saved.default = "lab"
    profiles.save(saved)


# -- observing nodes -------------------------------------------------------------------------------------------------
def init_pid(name: str) -> int | None:
    return (power().get(name) or {}).get("init_pid")


def formation(name: str) -> dict | None:
    """The node's /run/pvc/formation.json (container backend: read through /proc/PID/root). A vm node's progress
    is read from its serial console instead (console_progress)."""
    pid = init_pid(name)
    if pid is None:
        return None
    try:
        return json.loads(Path(f"/proc/{pid}/root/run/pvc/formation.json").read_text())
    except (OSError, ValueError):
        return None


def console_tail(node: dict, lines: int = 40) -> str:
    try:
        text = Path(node["console_log"]).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def node_failure(node: dict) -> str | None:
    """The last failed step or config problem a node's console reports since its last power-on, if any."""
    try:
        text = Path(node["console_log"]).read_text(errors="replace")
    except OSError:
        return None
    text = text.rsplit("=== pvc-lab: power on", 1)[-1]
    done = text.rfind(DONE)
    bad = max(text.rfind(FAILED), text.rfind(WAITING))
    if bad > done:
        line = text[bad:].splitlines()[0]
        return line
    return None


STEP_RE = re.compile(r"pvc-node: \[(\d+)/(\d+)\] ([\w-]+): (starting|done|FAILED)")


def console_progress(node: dict) -> dict | None:
    """Formation progress as the node's console shows it since its last power-on (the same shape as
    formation.json, with only the steps seen so far)."""
    try:
        text = Path(node["console_log"]).read_text(errors="replace")
    except OSError:
        return None
    text = text.rsplit("=== pvc-lab: power on", 1)[-1]
    steps: dict[str, str] = {}
    for m in STEP_RE.finditer(text):
        steps[m.group(3)] = {"starting": "running", "done": "done", "FAILED": "failed"}[m.group(4)]
    if not steps:
        return None
    return {"steps": [{"name": k, "state": v} for k, v in steps.items()], "done": DONE in text}


def progress(lab: dict, node: dict) -> dict | None:
    return console_progress(node) if lab["backend"] == "vm" else formation(node["name"])


def reached(prog: dict, until: str | None) -> bool:
    """Formation is done, or (with `until`) that step is."""
    return bool(prog.get("done")) or any(s["name"] == until and s["state"] == "done" for s in prog["steps"])


def wait_formed(lab: dict, timeout: float, say, until: str | None = None) -> None:  # type: ignore[no-untyped-def]
    """Wait until every node has formed (or, with `until`, every node's console shows that step done)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, str] = {}
    start = time.monotonic()
    while True:
        done = 0
        for node in lab["nodes"]:
            prog = progress(lab, node)
            if prog is None:
                continue
            running = next((s for s in prog["steps"] if s["state"] in ("running", "failed")), None)
            line = (
                "formed" if prog.get("done") else (f"{running['name']} ({running['state']})" if running else "starting")
            )
            if seen.get(node["name"]) != line:
                seen[node["name"]] = line
                say(f"{time.monotonic() - start:6.1f}s {node['name']}: {line}")
            done += reached(prog, until)
        if done == len(lab["nodes"]):
            what = f"reached '{until}'" if until else "formed"
            say(f"lab: all {done} node(s) {what} in {time.monotonic() - start:.0f} s")
            return
        if time.monotonic() > deadline:
            report = []
            for node in lab["nodes"]:
                prog = progress(lab, node) or {"steps": []}
                if not reached(prog, until):
                    failure = node_failure(node) or "no failure reported (still running)"
                    report.append(
                        f"{node['name']}: {failure}\n--- console of {node['name']} (last lines) ---\n{console_tail(node)}"
                    )
            raise LabError(f"the cluster did not form within {timeout:.0f} s:\n" + "\n".join(report))
        time.sleep(2)


# -- down ------------------------------------------------------------------------------------------------------------
def down(say=click.echo) -> None:  # type: ignore[no-untyped-def]
    lab = read_lab()
    if lab.get("forward_pid"):
        _kill_group(lab["forward_pid"], signal.SIGKILL)
    for pid in [lab.get("supervisor_pid"), *(entry.get("supervisor_pid") for entry in lab["nodes"])]:
        if pid:  # (a lab.json from before one supervisor per node kept a single one at the top)
            _kill_group(pid, signal.SIGTERM)
    for info in power().values():  # anything the supervisor did not get to
        for key in ("init_pid", "nspawn_pid"):
            if info.get(key):
                _kill_group(info[key], signal.SIGKILL, group=False)
    if lab.get("pxe"):
        from pvc.installer import labvm

        labvm.stop_pxe(lab)
    time.sleep(0.5)
    names = [n["name"] for n in lab["nodes"]]
    labnet.destroy(labnet.Plan(lab["lab_ns"], {}, {}, {}), names)
    if lab.get("mounted"):
        for _ in range(20):
            if subprocess.run(["umount", lab["root"]], capture_output=True).returncode == 0:
                break
            time.sleep(0.5)
    for loop in lab.get("loops", []):
        subprocess.run(["losetup", "-d", loop], capture_output=True)
    keep = LAB_DIR.parent / (LAB_DIR.name + ".last")
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True, exist_ok=True)
    if (LAB_DIR / "supervisor.log").exists():
        shutil.copy(LAB_DIR / "supervisor.log", keep / "supervisor.log")
    for node in lab["nodes"]:  # keep the consoles of the last lab for a post-mortem
        (keep / node["name"]).mkdir(parents=True, exist_ok=True)
        src = Path(node["console_log"])
        if src.exists():
            shutil.copy(src, keep / node["name"] / "console.log")
    shutil.rmtree(LAB_DIR, ignore_errors=True)
    say(f"lab: down ({len(names)} node(s) powered off, namespaces and loop devices removed; consoles kept in {keep})")


def _kill_group(pid: int, sig: int, group: bool = True) -> None:
    try:
        if group:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.2)


# -- power and shell -------------------------------------------------------------------------------------------------
def node_entry(lab: dict, name: str) -> dict:
    for node in lab["nodes"]:
        if node["name"] == name:
            return node
    raise LabError(f"no node '{name}' in this lab (nodes: {', '.join(n['name'] for n in lab['nodes'])})")


def ipmi(lab: dict, name: str, *command: str) -> str:
    b = node_entry(lab, name)["bmc"]
    return sh(
        "ip",
        "netns",
        "exec",
        lab["lab_ns"],
        "ipmitool",
        "-I",
        "lanplus",
        "-H",
        b["address"],
        "-p",
        str(b["port"]),
        "-U",
        b["username"],
        "-P",
        b["password"],
        *command,
    )


def nsenter_argv(pid: int, command: list[str]) -> list[str]:
    return ["nsenter", "--target", str(pid), "--mount", "--uts", "--ipc", "--net", "--pid", "--", *command]


# -- CLI -------------------------------------------------------------------------------------------------------------
def _fail(exc: Exception) -> None:
    click.echo(f"pvc-lab: {exc}", err=True)
    sys.exit(1)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """A PVC cluster of N nodes of the real image on this machine."""


@main.command("up")
@click.option("--nodes", "nodes", type=click.IntRange(1, 9), default=3, show_default=True)
@click.option("--backend", type=click.Choice(["container", "vm"]), default="container", show_default=True)
@click.option(
    "--config",
    "config",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="cluster.toml (default: examples/lab-1node.toml or lab-3node.toml)",
)
@click.option(
    "--boot",
    type=click.Choice(["kernel", "usb-uefi", "usb-bios", "iso-uefi", "iso-bios", "pxe-bios", "pxe-uefi"]),
    default="kernel",
    show_default=True,
    help="vm backend: how QEMU boots the image (direct kernel, the USB image or the ISO under UEFI or BIOS, or PXE)",
)
@click.option("--api-port", type=click.IntRange(1, 65535), default=17370, show_default=True)
@click.option("--timeout", type=float, default=900, show_default=True, help="seconds to wait for formation")
@click.option(
    "--until",
    default=None,
    metavar="STEP",
    help="return once every node has finished this formation step (e.g. data) instead of waiting for all of them",
)
@click.option(
    "--squashfs",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="use this filesystem.squashfs instead of building the image",
)
def up_cmd(
    nodes: int,
    backend: str,
    boot: str,
    config: Path | None,
    api_port: int,
    timeout: float,
    until: str | None,
    squashfs: Path | None,
) -> None:
    """Create the lab, power every node on, and return when the cluster has formed."""
    if config is None:
        defaults = DEFAULT_VM_CONFIGS if backend == "vm" else DEFAULT_CONFIGS
        if nodes not in defaults:
            _fail(
                LabError(f"there is no example config for {nodes} nodes; write one (pvc config init) and pass --config")
            )
        config = defaults[nodes]
    try:
        up(config, backend, api_port, timeout, squashfs, boot=boot, until=until)
    except LabError as exc:
        if lab_file().exists():
            exc = LabError(
                f"{exc}\n(the lab is left as it is for a look: pvc-lab status, pvc-lab ssh NODE; remove it with pvc-lab down)"
            )
        _fail(exc)


@main.command("status")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status_cmd(fmt: str) -> None:
    """Power, formation progress and console state of every node."""
    try:
        lab = read_lab()
    except LabError as exc:
        _fail(exc)
    pw = power()
    rows = []
    for node in lab["nodes"]:
        prog = progress(lab, node) or {}
        steps = prog.get("steps", [])
        rows.append(
            {
                "node": node["name"],
                "power": (pw.get(node["name"]) or {}).get("power", "unknown"),
                "formed": bool(prog.get("done")),
                "steps_done": sum(1 for s in steps if s["state"] == "done"),
                "steps": len(steps),
                "current": next((s["name"] for s in steps if s["state"] != "done"), ""),
                "problem": node_failure(node) or "",
                "address": node["ip"],
            }
        )
    doc = {"backend": lab["backend"], "api": f"http://127.0.0.1:{lab['api_port']}", "nodes": rows}
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2))
        return
    click.echo(f"backend {doc['backend']}, API {doc['api']} (connection 'lab')")
    click.echo(f"{'NODE':8} {'POWER':6} {'FORMED':6} {'STEPS':6} {'CURRENT':16} PROBLEM")
    for r in rows:
        click.echo(
            f"{r['node']:8} {r['power']:6} {'yes' if r['formed'] else 'no':6} {r['steps_done']}/{r['steps']:<4} {r['current']:16} {r['problem']}"
        )


@main.command("ssh", context_settings={"ignore_unknown_options": True})
@click.option(
    "--identity",
    "-i",
    envvar="PVC_LAB_IDENTITY",
    default=None,
    help="vm backend: private key of a [[users]] entry (default: ssh's own, ~/.ssh/id_* or the agent)",
)
@click.option("--user", "-l", default=None, help="vm backend: log in as this user (default: the first [[users]])")
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def ssh_cmd(node: str, command: tuple[str, ...], identity: str | None, user: str | None) -> None:
    """A shell (or CMD) on NODE: as root through the node's namespaces (container backend), or by ssh to the node's
    upstream address as a [[users]] entry of cluster.toml (vm backend)."""
    try:
        lab = read_lab()
        entry = node_entry(lab, node)
        if lab["backend"] == "vm":
            from pvc.installer import labvm

            argv = labvm.ssh_argv(lab, entry, list(command), identity, user)
            os.execvp(argv[0], argv)
    except LabError as exc:
        _fail(exc)
    pid = init_pid(node)
    if pid is None:
        _fail(LabError(f"node '{node}' is powered off (pvc-lab start {node})"))
    argv = nsenter_argv(pid, list(command) or ["/bin/bash", "-l"])
    os.execvp(argv[0], argv)


@main.command("kill")
@click.argument("node")
def kill_cmd(node: str) -> None:
    """Hard power-off of NODE through its BMC (IPMI chassis power off)."""
    try:
        click.echo(ipmi(read_lab(), node, "chassis", "power", "off").strip())
    except LabError as exc:
        _fail(exc)


@main.command("start")
@click.argument("node")
def start_cmd(node: str) -> None:
    """Power NODE on through its BMC."""
    try:
        click.echo(ipmi(read_lab(), node, "chassis", "power", "on").strip())
    except LabError as exc:
        _fail(exc)


@main.command("down")
def down_cmd() -> None:
    """Power every node off and remove the lab's namespaces, loop devices and files."""
    try:
        down()
    except LabError as exc:
        _fail(exc)
