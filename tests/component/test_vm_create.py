"""`pvc vm create` and `pvc vm remove --delete-disks` end to end: gunicorn with a real Patroni, Ceph and ZooKeeper
behind it (no node daemons: a VM told to start stays stopped).

A create from a profile gives a VM whose definition has the disks cloned (copy-on-write) from the image's protected
snapshot and the cloud-init seed as a read-only disk; the seed, read back from its RBD volume with pycdlib, has
the meta-data (instance-id = the VM's UUID, hostname), the user-data with --arg values put in and the network-config
matching the VM's MAC, and the same documents are kept beside the VM in ZooKeeper (the metadata service's). A
create refused by its checks makes nothing; one that fails in a step undoes what it made and its task names the
step. --delete-disks leaves no volume of the VM (and its seed record goes with it).

An OVA built here (qemu-img makes the stream-optimized VMDKs, the test writes the OVF and the tar) uploads into
volumes byte-identical to the raw disks, and a profile whose templates match the OVF; a VM made from it clones
them; a malformed OVA is a 400 naming what is wrong and leaves nothing behind.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
import yaml

from pvc.nodeos.provisioner import db, seed
from pvc.nodeos.state.models import NetworkRecord
from pvc.nodeos.storage import volumes
from pvc.nodeos.storage.ceph import connect
from tests.component.conftest import PROVISIONER_POOL as POOL
from tests.component.conftest import PROVISIONER_VNI as VNI
from tests.harness.cli import Cli
from tests.harness.cluster import JOIN_KEY
from tests.harness.ova import VMDK_URI, OvfDisk, OvfSpec, ovf_xml, tar, vmdk

P = "/api/v1/provisioner"
MiB = 1024**2
IMAGE = bytes(range(256)) * 4096 * 3  # 3 MiB with a pattern
USERDATA = "#cloud-config\npackages: [{{ package }}]\nruncmd:\n  - [sh, -c, 'echo {{ vm_name }} > /var/tmp/who']\n"


def call(api, method, path, body=None, **kw):
    return api.call(method, path if path.startswith("/api") else P + path, body=body, key=api.key, **kw)


def ok(api, method, path, body=None, **kw):
    code, answer = call(api, method, path, body, **kw)
    assert code in (200, 201, 202), (method, path, code, answer)
    return answer


@pytest.fixture(scope="module")
def api(provisioner_api):
    a = provisioner_api
    ok(a, "PUT", f"/images/tiny?pool={POOL}", raw=IMAGE)
    ok(a, "POST", "/templates/system", {"name": "small", "vcpus": 1, "memory_mib": 256})
    ok(a, "POST", "/templates/network", {"name": "lan", "nics": [{"network": VNI}]})
    disks = [
        {"id": "sda", "pool": POOL, "image": "tiny", "size": 8 * MiB},
        {"id": "sdb", "pool": POOL, "size": 4 * MiB},
    ]
    ok(a, "POST", "/templates/storage", {"name": "tiny-8m", "disks": disks})
    ok(a, "POST", "/userdata", {"name": "web", "body": USERDATA})
    profile = {
        "name": "web",
        "system_template": "small",
        "network_template": "lan",
        "storage_template": "tiny-8m",
        "userdata": "web",
        "arguments": {"package": "htop"},
        "metadata": {"region": "lab"},
    }
    ok(a, "POST", "/profiles", profile)
    ok(a, "POST", "/profiles", {**profile, "name": "noarg", "arguments": {}})
    return a


@pytest.fixture
def cli(api, tmp_path) -> Cli:
    c = Cli(tmp_path / "client")
    c.ok("connection", "add", "prov", "--from-config", str(api.config), "--address", "127.0.0.1", "--port",
         str(api.port))  # fmt: skip
    return c


def volume_names(ceph) -> set[str]:
    with connect(str(ceph.conf)) as c:
        return {v.name for v in volumes.list_volumes(c, POOL)}


def read_seed(ceph, name: str) -> dict[str, str]:
    with connect(str(ceph.conf)) as c:
        _, chunks = volumes.read_stream(c, POOL, f"{name}_cidata")
        return seed.read_iso(b"".join(chunks))


def vm_definition(api, name: str) -> dict:
    return ok(api, "GET", f"/api/v1/vms/{name}")["definition"]


def test_create_from_a_profile_clones_the_disks_and_writes_the_seed(api, ceph, cli, patroni):
    out = cli.run("vm", "create", "web1", "--profile", "web", "--arg", "package=nginx", "--wait")
    assert out.returncode == 0, out.stderr
    assert "create web1: succeeded: created VM web1" in out.stdout and "from profile web" in out.stdout
    assert "create web1: succeeded 4/4" in out.stderr  # (its steps pass too fast to be all seen polling)
    definition = vm_definition(api, "web1")
    disks = [(d["volume"], d["device"], d["read_only"], d["bus"]) for d in definition["disks"]]
    assert disks == [
        (f"{POOL}/web1_sda", "disk", False, "virtio"),
        (f"{POOL}/web1_sdb", "disk", False, "virtio"),
        (f"{POOL}/web1_cidata", "disk", True, "virtio"),  # seen while only the initramfs's drivers are loaded
    ]
    assert (definition["vcpus"], definition["memory_mib"]) == (1, 256)
    [nic] = definition["nics"]
    assert nic["network"] == VNI and nic["mac"]
    with connect(str(ceph.conf)) as c:
        sda, sdb = volumes.get_volume(c, POOL, "web1_sda"), volumes.get_volume(c, POOL, "web1_sdb")
        assert (sda.parent, sda.size) == (f"{POOL}/tiny@image", 8 * MiB)  # a copy-on-write clone, grown
        assert (sdb.parent, sdb.size) == (None, 4 * MiB)
        _, chunks = volumes.read_stream(c, POOL, "web1_sda")
        assert b"".join(chunks)[: len(IMAGE)] == IMAGE
    files = read_seed(ceph, "web1")
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": definition["uuid"], "local-hostname": "web1", "region": "lab"}
    assert files["user-data"] == USERDATA.replace("{{ package }}", "nginx").replace("{{ vm_name }}", "web1")
    network = yaml.safe_load(files["network-config"])
    assert network["ethernets"]["eth0"]["match"]["macaddress"] == nic["mac"].lower()
    # the same documents beside the VM in ZooKeeper, for the primary's metadata service
    record = api.state.vm_seed(definition["uuid"])
    assert record is not None and record.profile == "web" and record.meta_data == meta
    assert (record.user_data, record.network_config) == (files["user-data"], files["network-config"])
    xml = ok(api, "GET", "/api/v1/vms/web1")["xml"]
    assert f'name="{POOL}/web1_cidata"' in xml and "<readonly />" in xml
    # what it was made from is recorded
    conn = db.app_dsn(patroni.cfg, JOIN_KEY, patroni.members_string()).connect()
    with conn, conn.cursor() as cur:
        cur.execute(
            "SELECT vm_name, profile, arguments, meta_data, user_data FROM instance WHERE vm_uuid = %s",
            (meta["instance-id"],),
        )
        row = cur.fetchone()
    assert row is not None
    assert dict(row) == {
        "vm_name": "web1",
        "profile": "web",
        "arguments": {"package": "nginx"},
        "meta_data": meta,
        "user_data": files["user-data"],
    }
    conn.close()
    [task] = [t for t in ok(api, "GET", "/api/v1/tasks") if t["kind"] == "create" and t["target"] == "web1"]
    assert task["state"] == "succeeded" and task["progress"] == task["total"] == 4


def test_create_from_an_image_with_a_key_and_start(api, ceph, cli, tmp_path):
    key = tmp_path / "id.pub"
    key.write_text("# mine\nssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKey admin@lab\n")
    out = cli.run(
        "vm", "create", "quick1", "--image", "tiny", "--memory", "512M", "--vcpus", "2", "--disk-size", "16M",
        "--network", str(VNI), "--ssh-key", str(key), "--start", "--wait",
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "from image tiny and started it" in out.stdout
    definition = vm_definition(api, "quick1")
    assert (definition["vcpus"], definition["memory_mib"]) == (2, 512)
    assert [d["volume"] for d in definition["disks"]] == [f"{POOL}/quick1_sda", f"{POOL}/quick1_cidata"]
    assert ok(api, "GET", "/api/v1/vms/quick1")["state"] == "start"
    user = yaml.safe_load(read_seed(ceph, "quick1")["user-data"])
    assert user == {"ssh_authorized_keys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKey admin@lab"]}
    # removing it with its disks: refused while it is to run, then nothing of it is left
    assert "stop" in cli.fails("vm", "remove", "quick1", "--delete-disks", "--yes")
    assert {"quick1_sda", "quick1_cidata"} <= volume_names(ceph)
    cli.ok("vm", "stop", "quick1")
    out = cli.ok("vm", "remove", "quick1", "--delete-disks", "--yes")
    assert f"removed volume {POOL}/quick1_sda" in out and f"removed volume {POOL}/quick1_cidata" in out
    assert not {n for n in volume_names(ceph) if n.startswith("quick1")}
    assert call(api, "GET", "/api/v1/vms/quick1")[0] == 404


def test_refused_creates_make_nothing(api, ceph, cli):
    before = volume_names(ceph)
    for args, words in (
        (["--image", "nosuch", "--memory", "256M"], "there is no image 'nosuch'"),
        (["--profile", "nosuch"], "nosuch"),
        (["--image", "tiny", "--memory", "64G"], "no node can take it"),
        (["--image", "tiny", "--memory", "256M", "--network", "999"], "there is no network 999"),
        (["--image", "tiny", "--memory", "256M", "--disk-size", "1M"], "smaller than image tiny"),
        (["--profile", "noarg"], "--arg package=VALUE"),
        (["--profile", "web", "--memory", "1G"], "--memory is for a create without --profile"),
    ):
        assert words in cli.fails("vm", "create", "nope1", *args), args
    code, err = call(api, "POST", "/create", {"name": "nope1", "profile": "noarg"})
    assert code == 400 and err["field"] == "arguments", err
    code, err = call(api, "POST", "/create", {"name": "nope1", "image": "nosuch", "memory_mib": 256})
    assert code == 400 and err["field"] == "image", err
    assert call(api, "GET", "/api/v1/vms/nope1")[0] == 404
    assert volume_names(ceph) == before
    assert not [t for t in ok(api, "GET", "/api/v1/tasks") if t["target"] == "nope1"]


def test_a_failed_step_removes_what_was_made_and_names_the_step(api, ceph, cli):
    ok(api, "PUT", f"/images/broken?pool={POOL}", raw=IMAGE)
    with connect(str(ceph.conf)) as c:  # its snapshot gone behind the provisioner's back: the clone will fail
        volumes.protect_snapshot(c, POOL, "broken", "image", protect=False)
        volumes.remove_snapshot(c, POOL, "broken", "image")
    disks = [{"id": "sda", "pool": POOL, "size": 4 * MiB}, {"id": "sdb", "pool": POOL, "image": "broken"}]
    ok(api, "POST", "/templates/storage", {"name": "broken", "disks": disks})
    ok(api, "POST", "/profiles", {"name": "bad", "system_template": "small", "storage_template": "broken"})
    task = ok(api, "POST", "/create", {"name": "bad1", "profile": "bad"})
    assert task["total"] == 4 and task["kind"] == "create"
    task = wait_task(api, task)
    assert task["state"] == "failed", task
    assert "step 'clone disk sdb from image broken' failed: no snapshot" in task["message"], task
    assert f"removed volume {POOL}/bad1_sda" in task["message"]
    assert not {n for n in volume_names(ceph) if n.startswith("bad1")}
    assert call(api, "GET", "/api/v1/vms/bad1")[0] == 404
    # the CLI says the same, and fails
    res = cli.run("vm", "create", "bad2", "--profile", "bad", "--wait")
    assert res.returncode == 1 and "step 'clone disk sdb from image broken' failed" in res.stderr, res.stderr
    assert call(api, "DELETE", "/profiles/bad")[0] == 200


def wait_task(api, task: dict, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while task["state"] not in ("succeeded", "failed") and time.monotonic() < deadline:
        time.sleep(0.2)
        task = ok(api, "GET", f"/api/v1/tasks/{task['id']}")
    return task


def test_creates_complete_across_a_patroni_switchover(api, ceph, patroni):
    """The create reads the profile and records the instance in PostgreSQL: both ride out a switchover."""
    ended: list[dict] = []
    refused: list[tuple[int, object]] = []
    stop = threading.Event()

    def creator() -> None:
        n = 0
        while not stop.is_set() or n < 3:
            n += 1
            code, task = call(
                api, "POST", "/create", {"name": f"sw{n}", "profile": "noarg", "arguments": {"package": "x"}}
            )
            if code == 202:
                ended.append(wait_task(api, task))
            else:
                refused.append((code, task))

    thread = threading.Thread(target=creator)
    thread.start()
    try:
        patroni.switchover()
    finally:
        stop.set()
        thread.join(300)
    assert refused == [] and ended
    assert [t for t in ended if t["state"] != "succeeded"] == []
    for t in ended:
        code, gone = call(api, "DELETE", f"/api/v1/vms/{t['target']}?delete_disks=true")
        assert code == 200 and len(gone["volumes"]) == 3 and gone["kept"] == [], gone
    assert not {n for n in volume_names(ceph) if n.startswith("sw")}


def test_remove_with_its_disks_leaves_no_volume(api, ceph, cli):
    if call(api, "GET", "/api/v1/vms/web1")[0] == 404:
        cli.ok("vm", "create", "web1", "--profile", "web", "--wait")
    assert "already exists" in cli.fails("vm", "create", "web1", "--profile", "web")
    uuid = ok(api, "GET", "/api/v1/vms/web1")["uuid"]
    assert api.state.vm_seed(uuid) is not None
    out = cli.ok("vm", "remove", "web1", "--delete-disks", "--yes")
    assert out.count("removed volume") == 3
    assert api.state.vm_seed(uuid) is None  # removed with the VM
    names = volume_names(ceph)
    assert not {n for n in names if n.startswith("web1")} and "tiny" in names
    # the image has no clones left: only the templates and profiles hold it
    assert "cloned from it" not in cli.fails("image", "remove", "tiny")


def test_without_a_seed_volume_the_metadata_service_has_the_documents(api, ceph, cli):
    """--no-seed-volume: no seed volume, the documents only in the record the primary's metadata
    service serves; refused (before anything is made) when no NIC is on a managed network with a gateway."""
    before = volume_names(ceph)
    args = ("--image", "tiny", "--memory", "256M", "--no-seed-volume")
    assert "only managed networks with an IPv4 gateway" in cli.fails(
        "vm", "create", "meta1", *args, "--network", str(VNI)
    )
    assert volume_names(ceph) == before and call(api, "GET", "/api/v1/vms/meta1")[0] == 404
    managed = 4002
    api.state.create_network(
        NetworkRecord(vni=managed, name="mdnet", type="managed", mtu=1500, subnet="10.42.0.0/24", gateway="10.42.0.1")
    )
    try:
        out = cli.run("vm", "create", "meta1", *args, "--network", str(managed), "--wait")
        assert out.returncode == 0, out.stderr
        definition = vm_definition(api, "meta1")
        assert [d["volume"] for d in definition["disks"]] == [f"{POOL}/meta1_sda"]
        assert "meta1_cidata" not in volume_names(ceph)
        record = api.state.vm_seed(definition["uuid"])
        assert record is not None and record.meta_data["local-hostname"] == "meta1"
        cli.ok("vm", "remove", "meta1", "--delete-disks", "--yes")
        assert not {n for n in volume_names(ceph) if n.startswith("meta1")}
    finally:
        api.state.remove_network(managed)


# -- OVA import ----------------------------------------------------------------------------------------------------
DISK_A = bytes(range(256)) * 4096 * 2 + os.urandom(MiB) + b"\0" * MiB  # 4 MiB: a pattern, noise, zeros
DISK_B = os.urandom(512 * 1024) + b"\0" * (512 * 1024)
OVA_SPEC = OvfSpec(
    vcpus=2,
    memory_mib=384,
    disks=[OvfDisk("app-disk1.vmdk", len(DISK_A)), OvfDisk("app-disk2.vmdk", len(DISK_B))],
    nics=[("VM Network", "VmxNet3"), ("provnet", "E1000")],  # the first mapped at upload, the second by its name
    firmware="efi",
)


@pytest.fixture(scope="module")
def ova_file(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("ova")
    disks = {"app-disk1.vmdk": vmdk(DISK_A, folder, "a"), "app-disk2.vmdk": vmdk(DISK_B, folder, "b")}
    path = folder / "app.ova"
    path.write_bytes(tar({"app.ovf": ovf_xml(OVA_SPEC).encode(), **disks}))
    return path


def ova_leftovers(api, ceph, name: str) -> list[str]:
    """What a refused import of OVA `name` would have left: volumes, the OVA, its templates or profile."""
    left = [f"volume {v}" for v in sorted(volume_names(ceph)) if v.startswith(f"ova_{name}_")]
    for path in (f"/ovas/{name}", f"/profiles/{name}", f"/templates/system/{name}", f"/templates/network/{name}"):
        if call(api, "GET", path)[0] != 404:
            left.append(path)
    return left


def test_ova_upload_converts_the_disks_in_place_and_makes_a_profile(api, ceph, cli, ova_file):
    out = cli.run("provisioner", "ova", "upload", "app", str(ova_file), "--pool", POOL, "--network",
                  f"VM Network={VNI}", "--description", "the app")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "imported" in out.stdout and "profile app (2 vCPUs, 384 MiB, 2 NIC(s))" in out.stdout
    with connect(str(ceph.conf)) as c:
        for volume, data in (("ova_app_sda", DISK_A), ("ova_app_sdb", DISK_B)):
            _, chunks = volumes.read_stream(c, POOL, volume)
            assert b"".join(chunks) == data, volume  # byte-identical to the raw disk the VMDK was made from
            snaps = volumes.list_snapshots(c, POOL, volume)
            assert [(s.name, s.protected) for s in snaps] == [("ova", True)]
    shown = cli.json("provisioner", "ova", "info", "app")
    assert (shown["vcpus"], shown["memory_mib"], shown["firmware"], shown["description"]) == (2, 384, "uefi", "the app")
    assert [(d["id"], d["volume"], d["format"], d["size"], d["bus"]) for d in shown["disks"]] == [
        ("sda", "ova_app_sda", "vmdk", len(DISK_A), "scsi"),
        ("sdb", "ova_app_sdb", "vmdk", len(DISK_B), "scsi"),
    ]
    assert (shown["profiles"], shown["clones"]) == (["app"], [])
    profile = ok(api, "GET", "/profiles/app")
    assert (profile["kind"], profile["ova"], profile["system_template"], profile["network_template"]) == (
        "ova", "app", "app", "app"
    )  # fmt: skip
    system = ok(api, "GET", "/templates/system/app")
    assert (system["vcpus"], system["memory_mib"], system["firmware"]) == (2, 384, "uefi")
    nics = ok(api, "GET", "/templates/network/app")["nics"]
    assert nics == [{"network": VNI, "model": "virtio"}, {"network": VNI, "model": "e1000e"}]
    assert "app" in cli.ok("provisioner", "ova", "list")
    assert "OVA 'app' already exists" in cli.fails("provisioner", "ova", "upload", "app", str(ova_file))


def test_a_vm_from_an_ova_profile_clones_its_disks(api, ceph, cli, ova_file):
    if call(api, "GET", "/ovas/app")[0] == 404:
        ok(api, "PUT", f"/ovas/app?pool={POOL}&networks=VM%20Network%3D{VNI}", raw=ova_file.read_bytes())
    out = cli.run("vm", "create", "appvm", "--profile", "app", "--wait")
    assert out.returncode == 0, out.stderr
    definition = vm_definition(api, "appvm")
    assert [(d["volume"], d["bus"]) for d in definition["disks"][:2]] == [
        (f"{POOL}/appvm_sda", "scsi"),
        (f"{POOL}/appvm_sdb", "scsi"),
    ]
    assert (definition["vcpus"], definition["memory_mib"], definition["firmware"]) == (2, 384, "uefi")
    assert [(n["network"], n["model"]) for n in definition["nics"]] == [(VNI, "virtio"), (VNI, "e1000e")]
    with connect(str(ceph.conf)) as c:
        sda = volumes.get_volume(c, POOL, "appvm_sda")
        assert sda.parent == f"{POOL}/ova_app_sda@ova"  # a copy-on-write clone
        _, chunks = volumes.read_stream(c, POOL, "appvm_sda")
        assert b"".join(chunks) == DISK_A
    assert f"the VM disks cloned from it ({POOL}/appvm_sda, {POOL}/appvm_sdb)" in cli.fails(
        "provisioner", "ova", "remove", "app"
    )
    cli.ok("vm", "remove", "appvm", "--delete-disks", "--yes")
    assert cli.ok("provisioner", "ova", "remove", "app").strip() == "removed OVA app"
    assert ova_leftovers(api, ceph, "app") == []


def test_a_malformed_ova_is_refused_naming_the_problem_and_leaves_nothing(api, ceph, tmp_path):
    disk = vmdk(DISK_B, tmp_path, "d")
    one = OvfSpec(disks=[OvfDisk("d.vmdk", len(DISK_B))], nics=[("provnet", "VmxNet3")])
    good = ovf_xml(one)
    cases = {
        "not a tar": (os.urandom(4096), "the OVA is not a tar archive"),
        "no descriptor": (tar({"d.vmdk": disk}), "the OVA holds 0 .ovf descriptors; one is needed"),
        "not XML": (tar({"bad.ovf": b"<Envelope><x></Envelope>", "d.vmdk": disk}), "bad.ovf: not well-formed XML"),
        "entities": (
            tar({"bad.ovf": b'<!DOCTYPE e [<!ENTITY a "a">]><Envelope>&a;</Envelope>', "d.vmdk": disk}),
            "bad.ovf: the descriptor has a <!DOCTYPE>",
        ),
        "disk missing": (tar({"bad.ovf": good.encode()}), "bad.ovf: disk vmdisk0: file 'd.vmdk' is not in the OVA"),
        "format": (
            tar({"bad.ovf": good.replace(VMDK_URI, "http://example.com/raw").encode(), "d.vmdk": disk}),
            "format 'http://example.com/raw' is not allowed (VMDK or qcow2)",
        ),
        "not a VMDK": (tar({"bad.ovf": good.encode(), "d.vmdk": DISK_B}), "disk vmdisk0 ('d.vmdk'): qemu-img could"),
        "network": (
            tar({"bad.ovf": ovf_xml(OvfSpec(disks=one.disks, nics=[("DMZ", "E1000")])).encode(), "d.vmdk": disk}),
            "NIC 0 is on the OVF's network 'DMZ', which is no PVC network",
        ),
    }
    for case, (body, message) in cases.items():
        code, answer = call(api, "PUT", f"/ovas/bad?pool={POOL}", raw=body)
        assert code == 400 and message in answer["detail"], (case, code, answer)
        assert ova_leftovers(api, ceph, "bad") == [], case


def test_day_two_changes_under_the_original_names(api, ceph, cli, tmp_path):
    """A defined (stopped) VM changed through the CLI as an administrator of the original PVC would: volumes, vCPUs,
    memory, tags, rename, modify in $EDITOR, dump, log, list REGEX, undefine; and the refusals with their reasons.
    (The hot-plug into a running VM is test_rbd_vms's.)"""
    state = api.state
    for name in ("d2", "d2-new", "d2-other"):
        if call(api, "GET", f"/api/v1/vms/{name}")[0] == 200:
            ok(api, "DELETE", f"/api/v1/vms/{name}")
    with connect(str(ceph.conf)) as c:
        if "d2-data" not in {v.name for v in volumes.list_volumes(c, POOL)}:
            volumes.create_volume(c, POOL, "d2-data", 8 * MiB)
    cli.ok("vm", "define", "--name", "d2", "--memory", "64")
    cli.ok("vm", "define", "--name", "d2-other", "--memory", "64")

    out = cli.ok("vm", "volume", "add", "d2", f"{POOL}/d2-data", "--bus", "scsi")
    assert (
        out.strip() == f"added disk {POOL}/d2-data (scsi) to VM 'd2'; VM 'd2' is stopped, so it applies when it starts"
    )
    rows = cli.ok("vm", "volume", "get", "d2").splitlines()  # the original's name for `list`
    assert rows[1].split() == [f"{POOL}/d2-data", "disk", "scsi", "no", "-"]
    assert cli.fails("vm", "volume", "add", "d2", f"{POOL}/nope") == (
        f"pvc: invalid request: volume {POOL}/nope does not exist (make it with pvc storage volume add {POOL} nope "
        "SIZE) (field: volume)"
    )
    assert cli.fails("vm", "volume", "add", "d2-other", f"{POOL}/d2-data") == (
        f"pvc: conflict: volume {POOL}/d2-data is a disk of VM 'd2': remove it from that VM first"
    )
    out = cli.ok("vm", "volume", "remove", "d2", f"{POOL}/d2-data")
    assert out.startswith(f"removed disk {POOL}/d2-data from VM 'd2' (the volume stays);")
    assert cli.json("vm", "volume", "list", "d2") == []

    assert "set VM 'd2' to 2 vCPUs; VM 'd2' is stopped" in cli.ok("vm", "vcpu", "set", "d2", "2")
    assert cli.json("vm", "vcpu", "get", "d2") == {"vcpus": 2, "topology": None}
    cli.ok("vm", "vcpu", "set", "d2", "4", "--topology", "1,2,2")
    assert cli.json("vm", "vcpu", "get", "d2")["topology"] == {"sockets": 1, "cores": 2, "threads": 2}
    assert "to 1024M of memory" in cli.ok("vm", "memory", "set", "d2", "1G")
    assert cli.json("vm", "memory", "get", "d2") == {"memory_mib": 1024}
    assert cli.fails("vm", "memory", "set", "d2", "9G") == (
        "pvc: invalid request: memory_mib: 9216 MiB is more than any node has: the largest, n1, has 8192 MiB "
        "(field: memory_mib)"
    )
    assert "renamed VM 'd2' to 'd2-new'" in cli.ok("vm", "rename", "d2", "d2-new")
    assert "already exists" in cli.fails("vm", "rename", "d2-new", "d2-other")
    cli.ok("vm", "tag", "add", "d2-new", "web", "prod")
    assert cli.ok("vm", "tag", "remove", "d2-new", "web").strip() == "VM 'd2-new' tags: prod"
    assert cli.json("vm", "tag", "get", "d2-new") == {"tags": ["prod"]}
    assert sorted(v["name"] for v in cli.json("vm", "list", "^d2-")) == ["d2-new", "d2-other"]

    # modify in $EDITOR: an edit is applied; a refused one, answered "no" to editing again, changes nothing
    editor = cli.env.copy()
    cli.env["EDITOR"] = "sed -i 's/^memory_mib: 1024$/memory_mib: 512/'"
    assert "modified VM 'd2-new'; it is stopped" in cli.ok("vm", "modify", "d2-new")
    assert cli.json("vm", "memory", "get", "d2-new") == {"memory_mib": 512}
    assert cli.ok("vm", "modify", "d2-new").strip() == "VM 'd2-new' not changed"  # saved as it was
    cli.env["EDITOR"] = "sed -i 's/^memory_mib: 512$/memory_mib: 999999/'"
    refused = cli.run("vm", "modify", "d2-new", stdin="n\n")
    assert refused.returncode == 1 and refused.stderr.strip().endswith(
        "pvc: VM 'd2-new' not changed: invalid request: memory_mib: 999999 MiB is more than any node has: the "
        "largest, n1, has 8192 MiB (field: memory_mib)"
    ), refused.stderr
    cli.env = editor
    assert cli.json("vm", "memory", "get", "d2-new") == {"memory_mib": 512}

    dumped = tmp_path / "d2.xml"
    cli.ok("vm", "dump", "d2-new", "--file", str(dumped))
    assert "<name>d2-new</name>" in dumped.read_text()
    state.append_console(state.find_vm("d2-new").uuid, ["boot", "login:"])
    assert cli.ok("vm", "log", "d2-new", "--lines", "1") == cli.ok("vm", "console", "d2-new", "-n", "1") == "login:\n"
    assert cli.ok("vm", "undefine", "d2-new", "--yes").strip() == "removed VM 'd2-new'"
    cli.ok("vm", "undefine", "d2-other", "--yes")
    with connect(str(ceph.conf)) as c:
        assert "d2-data" in {v.name for v in volumes.list_volumes(c, POOL)}  # undefine keeps volumes
        volumes.remove_volume(c, POOL, "d2-data")
