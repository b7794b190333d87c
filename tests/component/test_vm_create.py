"""`pvc vm create` and `pvc vm remove --delete-disks` end to end: gunicorn with a real Patroni, Ceph and ZooKeeper
behind it (no node daemons: a VM told to start stays stopped).

A create from a profile gives a VM whose definition has the disks cloned (copy-on-write) from the image's protected
snapshot and the cloud-init seed as a read-only cdrom; the seed, read back from its RBD volume with pycdlib, has
the meta-data (instance-id = the VM's UUID, hostname), the user-data with --arg values put in and the network-config
matching the VM's MAC. A create refused by its checks makes nothing; one that fails in a step undoes what it made
and its task names the step. --delete-disks leaves no volume of the VM.
"""

from __future__ import annotations

import threading
import time

import pytest
import yaml

from pvc.nodeos.provisioner import db, seed
from pvc.nodeos.storage import volumes
from pvc.nodeos.storage.ceph import connect
from tests.component.conftest import PROVISIONER_POOL as POOL
from tests.component.conftest import PROVISIONER_VNI as VNI
from tests.harness.cli import Cli
from tests.harness.cluster import JOIN_KEY

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
    disks = [(d["volume"], d["device"], d["read_only"]) for d in definition["disks"]]
    assert disks == [
        (f"{POOL}/web1_sda", "disk", False),
        (f"{POOL}/web1_sdb", "disk", False),
        (f"{POOL}/web1_cidata", "cdrom", True),
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
    xml = ok(api, "GET", "/api/v1/vms/web1")["xml"]
    assert f'name="{POOL}/web1_cidata"' in xml and 'device="cdrom"' in xml and "<readonly />" in xml
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
    out = cli.ok("vm", "remove", "web1", "--delete-disks", "--yes")
    assert out.count("removed volume") == 3
    names = volume_names(ceph)
    assert not {n for n in names if n.startswith("web1")} and "tiny" in names
    # the image has no clones left: only the templates and profiles hold it
    assert "cloned from it" not in cli.fails("image", "remove", "tiny")


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
