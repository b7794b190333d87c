"""`pvc-lab up`, phase by phase: check the host, get the image, record the lab, build its network, give each node
its disks (and, on the vm backend, its QEMU settings), power every node on through its supervisor, forward the API,
register the `lab` connection, then wait until the cluster has formed and is healthy.

lab.json is written before anything is created and saved after every phase, so `pvc-lab down` can remove whatever
a failed `up` left.
"""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pvc.cli.profiles import Connection
from pvc.config import lab_hardware as hw
from pvc.config.load import load
from pvc.config.schema import ClusterFile, Node
from pvc.installer.lab import disks, network, observe, state, upstream
from pvc.installer.lab.command import LabError, sh, spawn
from pvc.installer.lab.observe import Say
from pvc.installer.lab.state import LAB_DIR, LAB_NS, Backend, Bmc, Lab, LabNode

if TYPE_CHECKING:
    from pvc.image.build import Artifacts


def load_config(path: Path) -> ClusterFile:
    result = load(path)
    if not result.valid or result.config is None:
        raise LabError("invalid cluster.toml:\n" + "\n".join(p.format(str(path)) for p in result.errors))
    return result.config


def check_tools(backend: Backend, boot: str) -> None:
    tools = ["systemd-nspawn", "losetup"] if backend == "container" else ["qemu-system-x86_64"]
    if backend == "vm" and boot.startswith("pxe-"):
        tools.append("dnsmasq")
    for tool in [*tools, "mke2fs", "socat", "ipmitool"]:
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is not installed: run bash ci/setup.sh")


def image_project() -> Path:
    """The PVC source tree the image is built from: the one this package runs from (an editable install), else the
    current directory when it is a checkout. A package installed from a wheel has no source tree of its own."""
    from pvc.image.build import DEFAULT_PROJECT

    for folder in (DEFAULT_PROJECT, Path.cwd()):
        if (folder / "pyproject.toml").is_file() and (folder / "image" / "recipe.py").is_file():
            return folder
    raise LabError(
        "no PVC source tree to build the node image from (pvc is installed as a package): run pvc-lab up in a PVC "
        "checkout, or give --squashfs FILE (container backend)"
    )


def build_image(say: Say) -> Artifacts:
    from pvc.image.build import build
    from pvc.image.run import BuildError

    project = image_project()
    out = Path(os.environ.get("PVC_IMAGE_OUT") or project / "build" / "image")
    try:
        return build(out, progress=lambda m: say(f"image: {m}"), project_root=project)
    except BuildError as exc:
        raise LabError(f"the image build failed: {exc.stage}: {exc.message}\n{exc.log_tail}") from None


def bmc_of(node: Node) -> Bmc:
    """The node's simulated BMC: as its [nodes.ipmi] says, or the lab's defaults where it says nothing."""
    ipmi = node.ipmi
    return Bmc(
        address=ipmi.address if ipmi else f"127.0.0.{node.id + 1}",
        port=ipmi.port if ipmi else hw.BMC_PORT,
        username=ipmi.username if ipmi else hw.BMC_USER,
        password=(ipmi.password if ipmi else None) or hw.BMC_PASSWORD,
    )


def record(config: Path, backend: Backend, boot: str, api_port: int) -> Lab:
    """The lab's folder and its lab.json, before anything else exists: from here on `pvc-lab down` cleans up."""
    state.make_dir()
    root = LAB_DIR / "root"
    root.mkdir(exist_ok=True)
    lab = Lab(
        backend=backend,
        boot=boot,
        config=str(config.resolve()),
        lab_ns=LAB_NS,
        root=str(root),
        api_port=api_port,
        started=time.time(),
    )
    state.save(lab)
    return lab


def mount_root(lab: Lab, squashfs: Path) -> None:
    sh("mount", "-o", "loop,ro", "-t", "squashfs", str(squashfs), lab.root)
    lab.mounted = True
    state.save(lab)


def create_network(lab: Lab, cfg: ClusterFile) -> network.NetworkPlan:
    net = network.plan(cfg, lab.lab_ns)
    lab.bridges = net.bridges
    state.save(lab)
    network.create(net, cfg.nodes, taps=lab.backend == "vm")
    return net


def create_upstream(lab: Lab, cfg: ClusterFile, net: network.NetworkPlan, log: Path) -> None:
    """The upstream router and world of the config's first [bgp] router, if it names one (upstream.py)."""
    router = upstream.plan(cfg, lab.lab_ns, net.bridges["upstream"])
    if router is None:
        return
    lab.upstream = upstream.record(router)
    state.save(lab)  # before anything exists: down removes whatever part was made
    try:
        upstream.create(router, lab.lab_ns, log, lab.upstream)
    finally:
        state.save(lab)  # the router's daemons started so far


def add_node(
    lab: Lab, node: Node, net: network.NetworkPlan, config: Path, cfg: ClusterFile, artifacts: Artifacts | None
) -> None:
    """One node's folder, disks and backend settings, recorded in lab.json."""
    ndir = LAB_DIR / node.name
    ndir.mkdir(exist_ok=True)
    entry = LabNode(
        name=node.name,
        id=node.id,
        netns=net.node_ns(node.name),
        console_log=str(ndir / "console.log"),
        dir=str(ndir),
        disks=disks.create(ndir, node, config, cfg),
        nics=net.nics[node.name],
        ip=str(node.ip.upstream),
        bmc=bmc_of(node),
    )
    if lab.backend == "vm":
        from pvc.installer.lab import vm

        assert artifacts is not None  # the vm backend always builds the image
        entry.vm = vm.prepare_node(lab, entry, cfg, artifacts, lab.boot)
    else:
        try:
            entry.binds = disks.attach(ndir, node.name, entry.disks, lab.loops)
        finally:
            state.save(lab)  # the loop devices made so far
    lab.nodes.append(entry)
    state.save(lab)


def power_on(lab: Lab, log: Path) -> None:
    """One supervisor (BMC and power) per node; each powers its node on."""
    for node in lab.nodes:
        sup = spawn([sys.executable, "-m", "pvc.installer.lab.supervisor", str(LAB_DIR), node.name], log)
        node.supervisor_pid = sup.pid
        state.save(lab)


def forward_api(lab: Lab, cfg: ClusterFile, log: Path) -> None:
    """127.0.0.1:API_PORT on the host -> the cluster's floating upstream address, inside the lab's namespace."""
    target = f"{cfg.network.upstream.floating_ip}\\:{cfg.api.port}"
    listen = f"TCP-LISTEN:{lab.api_port},bind=127.0.0.1,reuseaddr,fork"
    fwd = spawn(["socat", listen, f"EXEC:ip netns exec {lab.lab_ns} socat STDIO TCP\\:{target}"], log)
    lab.forward_pid = fwd.pid
    state.save(lab)


def lab_connection(cfg: ClusterFile, config: Path, api_port: int) -> Connection:
    """The `lab` connection, as `pvc connection add lab --from-config` would make it for the forward: https with the
    cluster CA pinned (it derives from the join key), the initial key."""
    from pvc.config.pki import ca_pem
    from pvc.config.secrets import initial_api_key, read_join_key

    join_key = read_join_key(cfg, config.parent)
    own = cfg.api.insecure_http or cfg.api.tls_cert_file is not None
    return Connection(
        name="lab",
        url=f"{'http' if cfg.api.insecure_http else 'https'}://127.0.0.1:{api_port}",
        key=initial_api_key(join_key),
        ca_pem=None if own else ca_pem(join_key, cfg),
        verify=cfg.api.tls_cert_file is None,  # the administrator's own certificate: the lab cannot know its CA
        description=f"pvc-lab ({cfg.cluster.name})",
    )


def register_connection(connection: Connection) -> None:
    from pvc.cli import profiles

    saved = profiles.load()
    saved.connections["lab"] = connection
    if saved.default is None:
        saved.default = "lab"
    profiles.save(saved)


def up(
    config: Path,
    backend: Backend,
    api_port: int,
    timeout: float,
    squashfs: Path | None,
    say: Say = print,
    boot: str = "kernel",
    until: str | None = None,
) -> None:
    check_tools(backend, boot)
    cfg = load_config(config)
    if state.lab_file().exists():
        raise LabError(f"a lab is already up ({state.lab_file()}): pvc-lab down first")
    artifacts = None
    if squashfs is None or backend == "vm":
        artifacts = build_image(say)
        squashfs = squashfs or Path(artifacts.squashfs)
    lab = record(config, backend, boot, api_port)
    if backend == "container":
        mount_root(lab, squashfs)
    net = create_network(lab, cfg)
    log = LAB_DIR / "supervisor.log"
    create_upstream(lab, cfg, net, log)
    for node in cfg.nodes:
        add_node(lab, node, net, config, cfg, artifacts)
    power_on(lab, log)
    forward_api(lab, cfg, log)
    connection = lab_connection(cfg, config, api_port)
    register_connection(connection)
    say(f"lab: {len(cfg.nodes)} node(s) powered on; API will be at {connection.url} (connection 'lab')")
    started = time.monotonic()
    observe.wait_formed(lab, timeout, say, until)
    if until is None:
        left = max(60.0, timeout - (time.monotonic() - started))
        observe.wait_healthy(connection.url, connection.key, connection.ca_pem, left, say)
