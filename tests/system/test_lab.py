"""A 3-node container lab of the real image forms from nothing, and a rebooted node rejoins without re-forming.

`pvc-lab up` boots the image's root with systemd-nspawn, one network namespace per node on the lab's bridges, loop
devices as disks; checks run on the nodes with testinfra through `pvc-lab ssh`.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import re
import time
from pathlib import Path

import pytest

from pvc.config.load import load
from pvc.nodeos.boot import console as node_console
from pvc.nodeos.daemon import hostinfo
from tests.harness import images
from tests.harness.examples import example
from tests.harness.labctl import Lab, running

NS = os.environ.get("PVC_LAB_NS", "pvcsys")  # the lab's namespace prefix: another run on this machine sets its own
NODES = ("node1", "node2", "node3")

C1_QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
C1_RBD = "<disk type='network' device='disk'><source protocol='rbd' name='vms/labdisk'/><target dev='vda' bus='virtio'/></disk>"


def c1_domain(name: str, devices: str = "", top: str = "", ns: str = "") -> str:
    return (
        f"<domain type='kvm'{ns}><name>{name}</name><memory unit='MiB'>64</memory>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type></os>{top}<devices>{C1_RBD}{devices}</devices></domain>"
    )


C1 = {  # the review's eight attacks on `pvc vm define`: (domain XML, the XML path the refusal names)
    "c1-file": (
        c1_domain("c1-file", "<disk type='file'><source file='/etc/shadow'/><target dev='vdb'/></disk>"),
        "devices/disk[2]/source/@file",
    ),
    "c1-block": (
        c1_domain("c1-block", "<disk type='block'><source dev='/dev/sda'/><target dev='vdb'/></disk>"),
        "devices/disk[2]/source/@dev",
    ),
    "c1-root": (
        c1_domain(
            "c1-root",
            "<filesystem type='mount' accessmode='passthrough'><source dir='/'/><target dir='r'/></filesystem>",
        ),
        "devices/filesystem",
    ),
    "c1-pci": (
        c1_domain(
            "c1-pci",
            "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0' bus='1' slot='0' function='0'/></source></hostdev>",
        ),
        "devices/hostdev",
    ),
    "c1-emulator": (c1_domain("c1-emulator", "<emulator>/bin/sh</emulator>"), "devices/emulator"),
    "c1-serial": (
        c1_domain("c1-serial", "<serial type='file'><source path='/etc/pvc/owned'/></serial>"),
        "devices/serial",
    ),
    "c1-seclabel": (c1_domain("c1-seclabel", top="<seclabel type='none'/>"), "seclabel"),
    "c1-qemu": (
        c1_domain(
            "c1-qemu",
            top="<qemu:commandline><qemu:arg value='-chardev'/></qemu:commandline>",
            ns=f" xmlns:qemu='{C1_QEMU_NS}'",
        ),
        "qemu:commandline",
    ),
}
OSD_OF: dict[str, list[int]] = {}  # node -> its OSD ids, filled by test_ceph
SERVICES = ("pvc-zookeeper", "pvc-patroni", "frr", "pvc-libvirtd", "pvc-pvcd", "pvc-api")
# Ceph health checks a one-machine lab cannot avoid. None has been needed so far: every check named here must say why.
ALLOWED_WARNINGS: dict[str, str] = {}


@pytest.fixture(scope="module")
def lab(image, tmp_path_factory):
    labdir, client = tmp_path_factory.mktemp("lab") / "l", tmp_path_factory.mktemp("client")
    with running(image.squashfs, labdir, NS, 17371, client) as lab:
        yield lab


def test_cluster_forms_from_nothing(lab):
    status = lab.status()
    assert [n["node"] for n in status["nodes"]] == list(NODES)
    for node in status["nodes"]:
        assert node["power"] == "on" and node["formed"], node
        assert node["steps_done"] == node["steps"] == 17
        assert node_console.done(node["node"], node["steps"]) in lab.console(node["node"])
    for name in NODES:
        assert "creating PVCDATA" in lab.console(name)


@pytest.mark.parametrize("node", NODES)
def test_services_run_on_every_node(lab, node):
    host = lab.host(node)
    for unit in (*SERVICES, f"pvc-ceph-mon@{node}", f"pvc-ceph-mgr@{node}"):
        assert host.service(unit).is_running, unit
    for unit in ("postgresql", "zookeeper", "libvirtd", "ceph-mon.target"):
        assert not host.service(unit).is_enabled, f"the package's own {unit} is enabled"


SRVR = """
import socket
out = []
for ip in ("198.51.100.11", "198.51.100.12", "198.51.100.13"):
    s = socket.create_connection((ip, 2181), timeout=3); s.sendall(b"srvr"); data = b""
    while chunk := s.recv(4096): data += chunk
    out.append([l.split(": ")[1] for l in data.decode().splitlines() if l.startswith("Mode")][0])
print(" ".join(out))
"""


def test_zookeeper_has_three_members_and_one_leader(lab):
    modes = lab.sh("node1", f"/opt/pvc/bin/python -c '{SRVR}'").split()
    assert sorted(modes) == ["follower", "follower", "leader"]


def test_ceph_three_mons_osds_up_in_pools_health(lab):
    status = lab.json("node2", "ceph -s -f json 2>/dev/null")
    assert sorted(status["quorum_names"]) == list(NODES)
    osdmap = status["osdmap"]
    assert osdmap["num_osds"] == osdmap["num_up_osds"] == osdmap["num_in_osds"] == 3
    pools = lab.json("node2", "ceph osd pool ls -f json 2>/dev/null")
    assert "vms" in pools
    health = lab.wait("HEALTH_OK", lambda: _health_ok(lab), 120)
    assert health
    tree = lab.json("node1", "ceph osd tree -f json 2>/dev/null")
    for host in (n for n in tree["nodes"] if n["type"] == "host"):
        OSD_OF[host["name"]] = host["children"]
    assert sorted(OSD_OF) == list(NODES) and all(len(v) == 1 for v in OSD_OF.values())


def _health_ok(lab: Lab) -> bool:
    health = lab.json("node1", "ceph health detail -f json 2>/dev/null")
    unexpected = {k: v["summary"]["message"] for k, v in health.get("checks", {}).items() if k not in ALLOWED_WARNINGS}
    assert not unexpected, unexpected
    return health["status"] in ("HEALTH_OK", "HEALTH_WARN")


def test_patroni_one_leader_two_replicas(lab):
    def members():
        data = lab.json("node3", "patronictl -c /etc/patroni/pvc.yml list -f json 2>/dev/null")
        roles = sorted(m["Role"] for m in data)
        # synchronous mode: one replica is the synchronous standby
        return (
            data
            if roles == ["Leader", "Replica", "Sync Standby"]
            and all(m["State"] in ("running", "streaming") for m in data)
            else None
        )

    assert lab.wait("1 Patroni leader, a synchronous standby and a replica", members, 120)


def test_provisioner_database_formed_and_served(lab):
    for name in NODES:
        console = lab.console(name)
        assert "provisioner-db: done" in console and "schema version 1" in console, name
    assert "(role and database created)" in "".join(lab.console(n) for n in NODES)  # by one of them
    assert lab.api_json("provisioner", "profile", "list") == []
    added = lab.api_json("provisioner", "template", "system", "add", "lab-small", "--vcpus", "1", "--memory", "256M")
    assert added["memory_mib"] == 256
    assert [t["name"] for t in lab.api_json("provisioner", "template", "system", "list")] == ["lab-small"]


def test_bgp_sessions_established(lab):
    """Each node with the two others (iBGP) and with the lab's upstream router (lab-3node.toml's [bgp] router)."""

    def established():
        for node in NODES:
            peers = lab.json(node, "vtysh -c 'show bgp summary json'")["ipv4Unicast"]["peers"]
            if len(peers) != 3 or "192.0.2.253" not in peers:
                return None
            if any(p["state"] != "Established" for p in peers.values()):
                return None
        return True

    assert lab.wait("every BGP session Established", established, 60)
    router = lab.status()["upstream"]
    assert sorted(router["sessions"]) == ["192.0.2.11", "192.0.2.12", "192.0.2.13"], router
    assert set(router["sessions"].values()) == {"Established"} and not router["problem"], router


@pytest.mark.parametrize("node", NODES)
def test_firewall_is_loaded(lab, node):
    ruleset = lab.sh(node, "nft list ruleset")
    assert "table inet pvc {" in ruleset and "policy drop;" in ruleset
    for service in ("zookeeper", "ceph-mon", "patroni", "libvirt-tls", "migration", "ssh"):
        assert f'comment "{service}"' in ruleset, service
    assert "16509" not in ruleset


def python_on(lab: Lab, node: str, code: str) -> str:
    """Run a Python script on a node with PVC's interpreter (passed base64-encoded: no shell quoting)."""
    encoded = base64.b64encode(code.encode()).decode()
    return lab.sh(node, f"echo {encoded} | base64 -d | /opt/pvc/bin/python -")


LIBVIRT_PROBE = """
import json, socket, ssl
host, out = "198.51.100.12", {}
try:
    socket.create_connection((host, 16509), timeout=3).close()
    out["tcp"] = "open"
except OSError as exc:
    out["tcp"] = type(exc).__name__
node = ("/etc/pki/libvirt/clientcert.pem", "/etc/pki/libvirt/private/clientkey.pem")
for name, cert in (("none", None), ("node", node)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations("/etc/pki/CA/cacert.pem")
    if cert:
        ctx.load_cert_chain(*cert)
    try:
        with socket.create_connection((host, 16514), timeout=5) as raw, ctx.wrap_socket(raw, server_hostname=host) as t:
            out[name] = "admitted" if t.recv(1) == b"\\x01" else "closed"
    except (ssl.SSLError, OSError) as exc:
        out[name] = type(exc).__name__
print(json.dumps(out))
"""


def test_libvirtd_refuses_a_client_without_a_node_certificate(lab):
    """From node1 to node2's libvirtd: no plain TCP, and TLS admits the node's certificate only (libvirtd confirms
    an admitted client with one byte)."""
    verdicts = json.loads(python_on(lab, "node1", LIBVIRT_PROBE))
    assert verdicts["tcp"] != "open" and verdicts["none"] != "admitted" and verdicts["node"] == "admitted", verdicts
    assert lab.sh("node1", "virsh -c qemu+tls://198.51.100.12/system hostname").split(".")[0] == "node2"


PATRONI_PROBE = """
import base64, json, urllib.error, urllib.request, yaml
auth = yaml.safe_load(open("/etc/patroni/pvc.yml"))["restapi"]["authentication"]
out = {}
for name, headers in (("anonymous", {}), ("pvc", {"Authorization": "Basic " + base64.b64encode(
        f"{auth['username']}:{auth['password']}".encode()).decode()})):
    req = urllib.request.Request("http://198.51.100.11:8008/reload", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            out[name] = resp.status
    except urllib.error.HTTPError as exc:
        out[name] = exc.code
print(json.dumps(out))
"""


def test_patroni_unsafe_endpoints_need_the_derived_password(lab):
    assert json.loads(python_on(lab, "node1", PATRONI_PROBE)) == {"anonymous": 401, "pvc": 202}


@pytest.mark.parametrize("node", NODES)
def test_ceph_daemons_run_as_ceph(lab, node):
    users = lab.sh(node, "ps -o user=,comm= -C ceph-mon,ceph-mgr,ceph-osd").split("\n")
    daemons = [line.split() for line in users if line.strip()]
    assert {c for _, c in daemons} == {"ceph-mon", "ceph-mgr", "ceph-osd"}, daemons
    assert {u for u, _ in daemons} == {"ceph"}, daemons


@pytest.mark.parametrize("node", NODES)
def test_root_is_read_only_and_state_is_on_pvcdata(lab, node):
    host = lab.host(node)
    root = json.loads(host.check_output("findmnt -J -o SOURCE,FSTYPE,OPTIONS /"))["filesystems"][0]
    assert root["fstype"] == "overlay"
    lower = re.search(r"lowerdir=([^,]+)", root["options"]).group(1)
    assert lower.rstrip("/") == str(lab.labdir / "root")  # the squashfs, mounted read-only on the lab host
    data = json.loads(host.check_output("findmnt -J -o SOURCE,LABEL,FSTYPE /var/pvcdata"))["filesystems"][0]
    assert data["fstype"] == "ext4"
    assert host.check_output("blkid -o value -s LABEL %s", data["source"]) == "PVCDATA"
    for folder in ("zookeeper", "ceph", "postgresql", "libvirt", "pvc"):
        src = json.loads(host.check_output("findmnt -J -o SOURCE /var/lib/%s", folder))["filesystems"][0]["source"]
        assert src == f"{data['source']}[/{folder}]", (folder, src)


def test_squashfs_is_mounted_read_only_on_the_host(lab):
    mounts = [line.split() for line in Path("/proc/self/mounts").read_text().splitlines()]
    root = next(m for m in mounts if m[1] == str(lab.labdir / "root"))
    assert root[2] == "squashfs" and "ro" in root[3].split(",")


ZK_WRITE = "from kazoo.client import KazooClient as K; z=K('198.51.100.11:2181'); z.start(); z.ensure_path('/systemtest'); z.set('/systemtest', b'written before the reboot'); z.stop()"
ZK_READ = "from kazoo.client import KazooClient as K; z=K('198.51.100.12:2181'); z.start(); print(z.get('/systemtest')[0].decode()); z.stop()"


def test_reboot_rejoins_without_reforming(lab):
    assert OSD_OF, "test_ceph_three_mons_osds_up_in_pools_health must run first"
    fsid = lab.sh("node2", "ceph fsid 2>/dev/null").strip()
    lab.sh("node1", f'/opt/pvc/bin/python -c "{ZK_WRITE}"')
    lab.sh(
        "node1",
        "head -c 4M /dev/urandom > /tmp/blob && rbd create vms/systest --size 8M 2>/dev/null && "
        "rbd import --no-progress /tmp/blob vms/systest-data 2>/dev/null",
    )
    blob_sum = lab.sh("node1", "sha256sum < /tmp/blob").split()[0]
    leader = next(
        m["Member"]
        for m in lab.json("node1", "patronictl -c /etc/patroni/pvc.yml list -f json 2>/dev/null")
        if m["Role"] == "Leader"
    )
    lab.sh(
        leader,
        "runuser -u postgres -- psql -qc \"CREATE TABLE systest (v text); INSERT INTO systest VALUES ('before reboot')\"",
    )
    lab.sh("node2", "echo not persistent > /etc/pvc-systest-marker")
    host_key = lab.sh("node2", "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").split()[1]

    lab.sh("node2", "systemctl reboot", check=False)
    lab.wait(
        "node2 to boot again and form",
        lambda: (
            f"{node_console.DONE_MARKER} node=node2" in lab.since_power_on("node2")
            and "rebooted" in (lab.labdir / "supervisor.log").read_text()
        ),
        300,
    )
    console = lab.since_power_on("node2")
    assert "reusing PVCDATA" in console and "creating PVCDATA" not in console
    assert "ceph-osd: done" in console and f"osd.{OSD_OF['node2'][0]}" in console  # the same OSD, not a new one
    assert "ceph-pools: done" in console and "all present" in console
    assert "provisioner-db: done" in console and "database pvc, schema version 1" in console  # nothing made again
    assert lab.sh("node2", "test -e /etc/pvc-systest-marker && echo kept || echo gone").strip() == "gone"
    # the SSH host key clients pinned is the same (kept on PVCDATA), and sshd serves it
    assert "SSH host key restored from PVCDATA" in console
    assert lab.sh("node2", "ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub").split()[1] == host_key
    served = lab.sh("node2", "ssh-keyscan -t ed25519 127.0.0.1 2>/dev/null | ssh-keygen -lf -").split()[1]
    assert served == host_key
    assert lab.sh("node2", "ceph fsid 2>/dev/null").strip() == fsid
    assert lab.json("node2", "ceph osd stat -f json 2>/dev/null")["num_osds"] == 3
    assert lab.sh("node2", f'/opt/pvc/bin/python -c "{ZK_READ}"').strip() == "written before the reboot"
    assert lab.sh("node2", "rbd export --no-progress vms/systest-data - 2>/dev/null | sha256sum").split()[0] == blob_sum
    leader = next(
        m["Member"]
        for m in lab.json("node1", "patronictl -c /etc/patroni/pvc.yml list -f json 2>/dev/null")
        if m["Role"] == "Leader"
    )
    assert lab.sh(leader, "runuser -u postgres -- psql -tAc 'SELECT v FROM systest'").strip() == "before reboot"
    assert lab.wait(
        "3 OSDs up again", lambda: lab.json("node1", "ceph osd stat -f json 2>/dev/null")["num_up_osds"] == 3, 120
    )


def test_osd_add_on_a_spare_disk(lab):
    out = lab.pvc("storage", "osd", "add", "node3", "--path", "/dev/disk/by-id/*pvc-spare*", "--wait", timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    osdmap = lab.json("node1", "ceph osd stat -f json 2>/dev/null")
    assert osdmap["num_osds"] == osdmap["num_up_osds"] == 4
    tree = lab.json("node1", "ceph osd tree -f json 2>/dev/null")
    node3 = next(n for n in tree["nodes"] if n["type"] == "host" and n["name"] == "node3")
    assert len(node3["children"]) == 2
    again = lab.pvc("storage", "osd", "add", "node2", "--path", "/dev/disk/by-id/*pvc-data*", "--wait", timeout=120)
    assert again.returncode != 0 and "matches no disk" in again.stdout + again.stderr  # PVCDATA is never an OSD


# -- the API: HTTPS only, roles, revocable keys (issue 11) -------------------------------------------------------------
ROLE_VM_XML = (
    "<domain type='qemu'><name>rolevm</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>"
    "<os><type arch='x86_64' machine='pc'>hvm</type></os><devices><serial type='pty'/></devices></domain>"
)


def test_the_api_answers_only_https_on_the_nodes_own_addresses(lab):
    conn = http.client.HTTPConnection("127.0.0.1", lab.api_port, timeout=10)  # the forward to the floating IP
    with pytest.raises((http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError)):
        conn.request("GET", "/api/v1/health")
        conn.getresponse()
    conn.close()
    status = lab.pvc("cluster", "status", "--format", "json")  # `lab`: the cluster CA pinned, no --insecure
    assert status.returncode == 0 and json.loads(status.stdout)["health"] in ("ok", "degraded"), status.stderr
    listening = lab.sh("node1", "ss -Hltn 'sport = :7370'")
    addresses = sorted(line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines())
    assert "0.0.0.0" not in addresses and "*" not in addresses, addresses
    assert {"127.0.0.1", "192.0.2.11", "198.51.100.11", "192.0.2.250", "198.51.100.250"} == set(addresses)


def test_the_api_workers_run_as_pvc_api(lab):
    workers = lab.sh("node1", "ps -o user=,args= -u pvc-api")
    assert "gunicorn" in workers, workers
    shown = lab.sh("node1", "systemctl show -p NoNewPrivileges,ProtectSystem pvc-api").split()
    assert sorted(shown) == ["NoNewPrivileges=yes", "ProtectSystem=strict"], shown  # systemd's order, not ours


def _key_connection(lab: Lab, tmp_path: Path, role: str) -> str:
    """A connection named after `role` with a new key of that role."""
    made = lab.pvc("cluster", "key", "add", f"sys-{role}", "--role", role)
    assert made.returncode == 0, made.stderr
    key_file = tmp_path / f"{role}.key"
    key_file.write_text(made.stdout.strip() + "\n")
    out = lab.pvc_raw("connection", "add", role, "--from-config", str(example("lab-3node")), "--address", "127.0.0.1",
                      "--port", str(lab.api_port), "--key-file", str(key_file))  # fmt: skip
    assert out.returncode == 0, out.stderr
    return role


def test_roles_read_only_lists_operator_starts_admin_defines(lab, tmp_path):
    ro, op = _key_connection(lab, tmp_path, "read-only"), _key_connection(lab, tmp_path, "operator")
    xml = tmp_path / "rolevm.xml"
    xml.write_text(ROLE_VM_XML)
    refused = lab.pvc_raw("-c", op, "vm", "define", "--file", str(xml))
    assert refused.returncode == 1 and "needs an API key with the role 'admin'" in refused.stderr
    defined = lab.pvc("vm", "define", "--file", str(xml))
    assert defined.returncode == 0, defined.stderr
    try:
        assert lab.pvc_raw("-c", ro, "vm", "list").returncode == 0
        refused = lab.pvc_raw("-c", ro, "vm", "start", "rolevm")
        assert refused.returncode == 1 and "forbidden" in refused.stderr
        assert "the role 'operator'; the key 'sys-read-only' has the role 'read-only'" in refused.stderr
        started = lab.pvc_raw("-c", op, "vm", "start", "rolevm")
        assert started.returncode == 0, started.stderr
    finally:
        lab.pvc("vm", "stop", "rolevm", "--wait", timeout=120)
        lab.pvc("vm", "remove", "rolevm", "--yes")
        for role in ("read-only", "operator"):
            lab.pvc("cluster", "key", "revoke", f"sys-{role}")


def test_the_initial_key_can_be_revoked_and_an_admin_key_still_works(lab, tmp_path):
    admin = _key_connection(lab, tmp_path, "admin")
    try:
        assert lab.pvc("cluster", "key", "revoke", "initial").returncode == 0

        def refused() -> bool:
            out = lab.pvc("cluster", "status")
            return out.returncode == 1 and "the API key 'initial' has been revoked" in out.stderr

        assert lab.wait("the initial key to be refused", refused, 30, interval=0.5)
        assert lab.pvc_raw("-c", admin, "cluster", "status").returncode == 0
    finally:
        restored = lab.pvc_raw("-c", admin, "cluster", "key", "restore", "initial")
        assert restored.returncode == 0, restored.stderr
        lab.wait("the initial key back", lambda: lab.pvc("cluster", "status").returncode == 0, 30, interval=0.5)
        lab.pvc("cluster", "key", "revoke", "sys-admin")


@pytest.mark.parametrize("node", NODES)
def test_root_cannot_log_in_and_the_join_key_is_in_no_log(lab, node):
    assert "permitrootlogin no" in lab.sh(node, "sshd -T 2>/dev/null | grep -i permitrootlogin")
    join_key = load(example("lab-3node")).config.cluster.join_key
    assert join_key not in lab.console(node)
    found = lab.sh(node, f"journalctl --no-pager -o cat | grep -c -F {join_key} || true").strip()
    assert found == "0", f"the join key is in {node}'s journal"
    found = lab.sh(node, f"grep -r -l -F {join_key} /var/log /var/lib/pvc 2>/dev/null || true").strip()
    assert found == "", f"the join key is in {found}"


# -- day two in the lab: a VM on an uploaded RBD volume, live migration, and a node's power loss ---------------------
SCENARIO: dict = {}


def vm(lab: Lab) -> dict:
    return lab.api_json("vm", "info", "labvm")


def running_on(lab: Lab) -> list[str]:
    """Where libvirt itself says the domain runs, asked on every powered node (the double-run check)."""
    power = {n: json.loads((lab.labdir / n / "power.json").read_text()) for n in NODES}
    return [
        n
        for n in NODES
        if power[n]["power"] == "on"
        and lab.sh(n, "virsh -c qemu:///system domstate labvm 2>/dev/null || true", check=False).strip() == "running"
    ]


def test_uploaded_volume_vm_starts_and_live_migrates(lab, tmp_path):
    disk = tmp_path / "disk.raw"
    disk.write_bytes(bytes(range(256)) * 4096 * 32)  # 32 MiB with a recognisable pattern
    SCENARIO["sum"] = hashlib.sha256(disk.read_bytes()).hexdigest()
    up = lab.pvc("storage", "volume", "upload", "vms", "labdisk", str(disk), "--quiet", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    # a firmware-only VM on the uploaded volume, through the typed model (the CLI's options)
    defined = lab.pvc("vm", "define", "--name", "labvm", "--memory", "64", "--machine", "pc", "--disk", "vms/labdisk")
    assert defined.returncode == 0, defined.stderr
    shown = lab.api_json("vm", "info", "labvm")
    assert shown["definition"]["disks"][0]["volume"] == "vms/labdisk" and 'protocol="rbd"' in shown["xml"]
    if hostinfo.accelerator() == "tcg":  # this host (a nested PVM one, or no /dev/kvm): nodes run guests under TCG
        assert 'type="qemu"' in shown["xml"].splitlines()[0], shown["xml"][:80]
    started = lab.pvc("vm", "start", "labvm", "--wait", timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    first = vm(lab)
    assert first["running"] == "running"
    assert running_on(lab) == [first["running_on"]]
    target = next(n for n in NODES if n != first["running_on"])
    moved = lab.pvc("vm", "migrate", "labvm", "--target", target, "--wait", timeout=300)
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert lab.wait("labvm running on " + target, lambda: vm(lab)["running_on"] == target, 60)
    assert running_on(lab) == [target]
    log = lab.sh(target, "grep -h -i migrat /var/log/libvirt/qemu/labvm.log | tail -3 || true", check=False)
    print(log)


def test_uploads_that_name_a_nodes_files_are_refused(lab, tmp_path):
    """C3/H1 on a node: the API's qemu-img refuses a qcow2 whose backing file is the node's cluster.toml (the join
    key) and a VMDK whose extent is a node file, leaves nothing, and still converts a good qcow2 and VMDK."""
    raw = tmp_path / "good.raw"
    data = images.raw_disk(raw, data_mib=1, hole_mib=4)
    for fmt, subformat in (("qcow2", None), ("vmdk", "streamOptimized")):
        good = images.converted(raw, tmp_path / f"good.{fmt}", fmt, subformat)
        up = lab.pvc("storage", "volume", "upload", "vms", f"good-{fmt}", str(good), "--quiet", timeout=300)
        assert up.returncode == 0 and f"({fmt})" in up.stdout, up.stdout + up.stderr
        back = tmp_path / f"back-{fmt}.raw"
        down = lab.pvc("storage", "volume", "download", "vms", f"good-{fmt}", str(back), "--quiet", timeout=300)
        assert down.returncode == 0 and back.read_bytes() == data, down.stderr
        assert lab.pvc("storage", "volume", "remove", "vms", f"good-{fmt}").returncode == 0
    backing = images.with_backing_file(tmp_path / "backing.qcow2", Path("/run/pvc/cluster.toml"))
    extent = images.vmdk_with_extent(tmp_path / "extent.vmdk", Path("/usr/bin/qemu-img"))
    for name, path, needle in (("hb", backing, "names a backing file"), ("he", extent, "extent files outside")):
        out = lab.pvc("storage", "volume", "upload", "vms", name, str(path), "--quiet", timeout=300)
        assert out.returncode == 1 and needle in out.stderr, out.stdout + out.stderr
        assert "no volume" in lab.pvc("storage", "volume", "info", "vms", name).stderr
    bad = lab.pvc("storage", "volume", "upload", "vms", "x:conf=/etc/passwd", str(raw), "--quiet")
    assert bad.returncode == 1 and "path parameter 'volume'" in bad.stderr, bad.stderr
    spools = [lab.sh(n, "ls -A /var/lib/pvc/upload 2>/dev/null || true", check=False).strip() for n in NODES]
    assert spools == ["", "", ""], spools


def test_hostile_domain_xml_is_refused_by_the_cli_and_leaves_nothing(lab, tmp_path):
    """C1 on a node, as the review tried it: each of its eight domain XMLs through `pvc vm define --file` is refused
    (exit 1) with the XML path and the reason, and no VM is left behind."""
    before = {v["name"] for v in lab.api_json("vm", "list")}
    for name, (xml, path) in C1.items():
        f = tmp_path / f"{name}.xml"
        f.write_text(xml)
        out = lab.pvc("vm", "define", "--file", str(f))
        assert out.returncode == 1 and f"{path}" in out.stderr, (name, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
    after = {v["name"] for v in lab.api_json("vm", "list")}
    assert after == before and not any(n.startswith("c1-") for n in after)


def test_node_power_loss_fences_and_restarts_the_vm_elsewhere(lab):
    assert "sum" in SCENARIO, "test_uploaded_volume_vm_starts_and_live_migrates must run first"
    victim = vm(lab)["running_on"]
    killed = lab.run("kill", victim)
    assert "Down/Off" in killed.stdout or "off" in killed.stdout.lower(), killed.stdout
    seen: list[list[str]] = []

    def recovered() -> str | None:
        where = running_on(lab)
        seen.append(where)
        assert len(where) <= 1, f"labvm runs on {where} at once"
        return where[0] if where and where[0] != victim else None

    new_home = lab.wait("labvm running on another node", recovered, 180, interval=1.0)
    assert new_home != victim
    nodes = lab.api_json("node", "list")
    dead = next(n for n in nodes if n["name"] == victim)
    assert dead["daemon_state"] in ("dead", "fenced") and dead["fence"] is not None, dead
    assert (
        lab.sh(new_home, "rbd export --no-progress vms/labdisk - 2>/dev/null | sha256sum").split()[0] == SCENARIO["sum"]
    )
    lab.run("start", victim)  # back through its BMC: it must not start the VM it lost
    lab.wait(f"{victim} formed again", lambda: node_console.DONE_MARKER in lab.since_power_on(victim), 300)
    for _ in range(10):
        assert running_on(lab) == [new_home]
        time.sleep(1)
