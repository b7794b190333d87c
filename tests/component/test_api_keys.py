"""API keys under the real API (gunicorn over ZooKeeper): roles on every operation, keys made, revoked and restored
at run time, cluster.toml's keys seeded, digests only in ZooKeeper, and the limit on failed authentications."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from kazoo.client import KazooClient

from pvc.api.keys import allows
from pvc.config.choices import API_ROLES
from pvc.config.secrets import initial_api_key
from pvc.nodeos.state import layout
from tests.harness.api import ApiServer, seed_formed_cluster
from tests.harness.cluster import JOIN_KEY, cluster_toml
from tests.harness.ports import free_port
from tests.harness.procs import wait_until

V1 = "/api/v1"
# The operations an operator key may do beyond reading: the VM lifecycle, flush and ready, and a VM's console.
OPERATOR = {
    ("POST", f"{V1}/vms/{{vm}}/state"),
    ("POST", f"{V1}/vms/{{vm}}/migrate"),
    ("POST", f"{V1}/nodes/{{node}}/flush"),
    ("POST", f"{V1}/nodes/{{node}}/ready"),
    ("GET", f"{V1}/vms/{{vm}}/console"),
}
ADMIN_READS = {("GET", f"{V1}/cluster/keys"), ("GET", f"{V1}/storage/pools/{{pool}}/volumes/{{volume}}/data")}


def soon(check, timeout: float = 5.0) -> None:
    """Every API worker follows the keys (and VMs) through its own watch: a change reaches them within moments."""
    wait_until("every API worker to see the change", check, timeout, interval=0.05)


def operations(api) -> list[tuple[str, str, dict]]:
    status, doc = api.call("GET", f"{V1}/openapi.json")
    assert status == 200
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def nowhere(path: str) -> str:
    """The path with every parameter naming nothing that exists (so an allowed call changes nothing)."""
    for param in ("vm", "node", "task_id", "fault_id", "key_name", "pool", "volume", "snapshot", "osd"):
        path = path.replace(f"{{{param}}}", "nosuch" + param.replace("_", ""))
    return path


def add_key(api, role: str, name: str | None = None) -> tuple[str, str]:
    name = name or f"{role}-{uuid.uuid4().hex[:6]}"
    status, made = api.call("POST", f"{V1}/cluster/keys", {"name": name, "role": role}, key=api.key)
    assert status == 201, made
    assert made["name"] == name and made["role"] == role and made["owner"] == "api" and len(made["key"]) == 43
    return name, made["key"]


@pytest.fixture
def role_keys(api_cluster) -> Iterator[dict[str, str]]:
    made = {role: add_key(api_cluster, role) for role in API_ROLES}
    yield {role: key for role, (_, key) in made.items()}
    for name, _ in made.values():
        api_cluster.call("DELETE", f"{V1}/cluster/keys/{name}", key=api_cluster.key)


def test_every_operation_declares_its_role_and_the_roles_are_as_documented(api_cluster):
    for method, path, op in operations(api_cluster):
        if op.get("security") == []:
            assert "x-pvc-role" not in op
            continue
        role = op["x-pvc-role"]
        if (method, path) in OPERATOR:
            expected = "operator"
        elif (method, path) in ADMIN_READS:
            expected = "admin"
        else:
            expected = "read-only" if method == "GET" else "admin"
        assert role == expected, (method, path, role)
        assert f"Needs an API key with the role {role}" in op["description"]
        assert ("403" in op["responses"]) == (role != "read-only"), (method, path)


def test_every_operation_against_every_role(api_cluster, role_keys):
    """403 naming both roles where the key's role is too weak; anything but 401/403 where it is enough.

    The calls go out eight at a time (the API's workers × threads): an allowed provisioner call waits out its database
    retry window (there is no PostgreSQL behind this API), and one after another those waits took minutes."""
    calls = []
    for method, path, op in operations(api_cluster):
        if op.get("security") == []:
            continue
        body: dict[str, object] | None = (
            {} if "requestBody" in op and "application/json" in op["requestBody"]["content"] else None
        )
        calls += [(method, path, op["x-pvc-role"], role, key, body) for role, key in role_keys.items()]

    def call(c: tuple) -> tuple[int, dict]:
        method, path, _, _, key, body = c
        return api_cluster.call(method, nowhere(path), body=body, key=key)

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(call, calls))
    for (method, path, need, role, _, _), (status, answer) in zip(calls, answers, strict=True):
        if allows(role, need):
            assert status not in (401, 403), (method, path, role, status, answer)
        else:
            assert status == 403, (method, path, role, status, answer)
            assert answer["error"] == "forbidden"
            assert f"the role '{need}'" in answer["detail"] and f"has the role '{role}'" in answer["detail"]
    assert len(calls) >= 3 * 40


def test_read_only_reads_but_cannot_start_and_operator_starts_but_cannot_define(api_cluster, role_keys):
    from tests.harness.cluster import tiny_vm_json

    name = f"roles-{uuid.uuid4().hex[:6]}"
    status, _ = api_cluster.call("POST", f"{V1}/vms", {"definition": tiny_vm_json(name)}, key=role_keys["operator"])
    assert status == 403
    status, vm = api_cluster.call("POST", f"{V1}/vms", {"definition": tiny_vm_json(name)}, key=role_keys["admin"])
    assert status == 201, vm
    try:
        soon(lambda: name in [v["name"] for v in api_cluster.call("GET", f"{V1}/vms", key=role_keys["read-only"])[1]])
        status, err = api_cluster.call(
            "POST", f"{V1}/vms/{name}/state", {"action": "start"}, key=role_keys["read-only"]
        )
        assert status == 403 and "needs an API key with the role 'operator'" in err["detail"]
        status, vm = api_cluster.call("POST", f"{V1}/vms/{name}/state", {"action": "start"}, key=role_keys["operator"])
        assert status == 200 and vm["state"] == "start"
        status, _ = api_cluster.call("PATCH", f"{V1}/vms/{name}", {"tags": ["x"]}, key=role_keys["operator"])
        assert status == 403
        status, err = api_cluster.call("GET", f"{V1}/cluster/keys", key=role_keys["operator"])
        assert status == 403
    finally:
        api_cluster.call("POST", f"{V1}/vms/{name}/state", {"action": "stop"}, key=api_cluster.key)
        api_cluster.call("DELETE", f"{V1}/vms/{name}", key=api_cluster.key)


def test_keys_are_stored_as_digests_and_listed_without_them(api_cluster):
    name, key = add_key(api_cluster, "read-only")
    try:
        raw, _ = api_cluster.state.zk.get(layout.api_key(name))
        assert key.encode() not in raw and hashlib.sha256(key.encode()).hexdigest().encode() not in raw
        status, listed = api_cluster.call("GET", f"{V1}/cluster/keys", key=api_cluster.key)
        mine = next(k for k in listed if k["name"] == name)
        assert set(mine) == {"name", "role", "owner", "created", "revoked", "revoked_at"}
        assert next(k for k in listed if k["name"] == "initial")["owner"] == "derived"
        status, err = api_cluster.call(
            "POST", f"{V1}/cluster/keys", {"name": name, "role": "admin"}, key=api_cluster.key
        )
        assert status == 409 and "exists" in err["detail"]
        status, err = api_cluster.call(
            "POST", f"{V1}/cluster/keys", {"name": "initial", "role": "admin"}, key=api_cluster.key
        )
        assert status == 409
    finally:
        status, gone = api_cluster.call("DELETE", f"{V1}/cluster/keys/{name}", key=api_cluster.key)
        assert status == 200 and gone["revoked"] is True
    assert api_cluster.state.zk.exists(layout.api_key(name)) is None  # made at run time: revoking deletes it
    soon(lambda: all(api_cluster.call("GET", f"{V1}/vms", key=key, source="127.0.2.9")[0] == 401 for _ in range(4)))
    status, err = api_cluster.call("GET", f"{V1}/vms", key=key, source="127.0.2.9")
    assert status == 401 and err["detail"] == "the API key is not valid for this cluster"


@contextlib.contextmanager
def initial_restored(api_cluster, admin: str) -> Iterator[None]:
    try:
        yield
    finally:
        api_cluster.call("POST", f"{V1}/cluster/keys/initial/restore", {}, key=admin)


def test_revoke_the_initial_key_and_restore_it(api_cluster):
    status, err = api_cluster.call("DELETE", f"{V1}/cluster/keys/initial", key=api_cluster.key)
    assert status == 409 and "last admin key" in err["detail"]  # it is the only admin key: refused
    name, admin = add_key(api_cluster, "admin")
    try:
        with initial_restored(api_cluster, admin):
            status, revoked = api_cluster.call("DELETE", f"{V1}/cluster/keys/initial", key=api_cluster.key)
            assert status == 200 and revoked["revoked"] is True and revoked["owner"] == "derived"

            def refused_everywhere() -> bool:  # several requests: both workers
                answers = [
                    api_cluster.call("GET", f"{V1}/vms", key=api_cluster.key, source="127.0.2.1") for _ in range(4)
                ]
                return all(a == (401, answers[0][1]) for a in answers)

            soon(refused_everywhere)
            status, err = api_cluster.call("GET", f"{V1}/vms", key=api_cluster.key, source="127.0.2.1")
            assert status == 401 and err["detail"] == "the API key 'initial' has been revoked"
            assert api_cluster.call("GET", f"{V1}/vms", key=admin)[0] == 200
            status, err = api_cluster.call("DELETE", f"{V1}/cluster/keys/{name}", key=admin)
            assert status == 409 and "last admin key" in err["detail"]
            status, restored = api_cluster.call("POST", f"{V1}/cluster/keys/initial/restore", {}, key=admin)
            assert status == 200 and restored["revoked"] is False
            soon(lambda: all(api_cluster.call("GET", f"{V1}/vms", key=api_cluster.key)[0] == 200 for _ in range(4)))
    finally:
        api_cluster.call("DELETE", f"{V1}/cluster/keys/{name}", key=api_cluster.key)


def test_wrong_keys_are_limited_per_address(api_cluster):
    source = "127.0.3.1"
    statuses = []
    for _ in range(45):  # BURST per worker, two workers: one of them refuses by the 41st
        status, err = api_cluster.call("GET", f"{V1}/vms", key="wrong-" + "y" * 30, source=source)
        statuses.append(status)
        if status == 429:
            assert "too many wrong API keys from 127.0.3.1: try again in" in err["detail"]
            break
    assert statuses[:20] == [401] * 20 and statuses[-1] == 429, statuses
    assert api_cluster.call("GET", f"{V1}/vms", key=api_cluster.key, source="127.0.3.2")[0] == 200
    assert api_cluster.call("GET", f"{V1}/vms", source=source)[0] == 401  # no key: nothing guessed, not limited


def test_failures_are_logged_with_the_path_quoted(api_cluster):
    api_cluster.call("GET", f"{V1}/vms/x%0aFORGED%20line", key="wrong-" + "z" * 30, source="127.0.4.1")
    log = api_cluster.proc.log.read_text()
    assert "for GET '/api/v1/vms/x\\nFORGED line'" in log
    assert not any(line.startswith("FORGED") for line in log.splitlines())


# -- cluster.toml's keys ---------------------------------------------------------------------------------------------
def test_config_keys_are_seeded_with_their_roles_and_follow_the_file(workdir, zookeeper, tmp_path):
    """A separate API over its own ZooKeeper tree (a chroot) and its own cluster.toml."""
    chroot = f"/keys-{uuid.uuid4().hex[:6]}"
    root = KazooClient(hosts=zookeeper.hosts, timeout=5)
    root.start(timeout=10)
    root.ensure_path(chroot)
    root.stop()
    root.close()
    hosts = zookeeper.hosts + chroot
    zk, _state = seed_formed_cluster(hosts, JOIN_KEY, ["n1", "n2", "n3"])
    monitoring, ops = "m" * 40, "o" * 40
    (tmp_path / "ops.key").write_text(ops + "\n")
    keys = (
        "[api]\nkeys = [\n"
        f'  {{ name = "monitoring", role = "read-only", sha256 = "{hashlib.sha256(monitoring.encode()).hexdigest()}" }},\n'
        '  { name = "ops", role = "operator", key_file = "ops.key" },\n'
        '  { name = "plain", key = "' + "p" * 32 + '" },\n]\n'
    )
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_toml(["n1", "n2", "n3"]) + keys)
    initial = initial_api_key(JOIN_KEY)
    try:
        with ApiServer.running(tmp_path / "a", config, hosts, free_port()) as api:
            api.key = initial
            status, listed = api.call("GET", f"{V1}/cluster/keys", key=initial)
            roles = {k["name"]: (k["role"], k["owner"]) for k in listed}
            assert roles == {
                "initial": ("admin", "derived"),
                "monitoring": ("read-only", "config"),
                "ops": ("operator", "config"),
                "plain": ("read-only", "config"),  # no role in the file: the least
            }
            assert api.call("GET", f"{V1}/vms", key=monitoring)[0] == 200
            assert api.call("POST", f"{V1}/nodes/nosuch/flush", key=monitoring)[0] == 403
            assert api.call("POST", f"{V1}/nodes/nosuch/flush", key=ops)[0] == 404
            status, _ = api.call("DELETE", f"{V1}/cluster/keys/ops", key=initial)
            assert status == 200
            soon(lambda: all(api.call("GET", f"{V1}/vms", key=ops)[0] == 401 for _ in range(4)))
        # the file drops 'plain' and 'monitoring'; a revoked config key stays revoked across a restart
        config.write_text(
            cluster_toml(["n1", "n2", "n3"])
            + '[api]\nkeys = [{ name = "ops", role = "operator", key_file = "ops.key" }]\n'
        )
        with ApiServer.running(tmp_path / "b", config, hosts, free_port()) as api:
            status, listed = api.call("GET", f"{V1}/cluster/keys", key=initial)
            assert {k["name"]: k["revoked"] for k in listed} == {"initial": False, "ops": True}
            assert api.call("GET", f"{V1}/vms", key=ops)[0] == 401
            assert api.call("POST", f"{V1}/cluster/keys/ops/restore", {}, key=initial)[0] == 200
            soon(lambda: all(api.call("GET", f"{V1}/vms", key=ops)[0] == 200 for _ in range(4)))
    finally:
        zk.stop()
        zk.close()


def test_a_short_key_file_stops_the_api_with_its_name(workdir, zookeeper, tmp_path):
    (tmp_path / "short.key").write_text("only-twenty-characters\n")
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_toml(["n1"]) + '[api]\nkeys = [{ name = "short", key_file = "short.key" }]\n')
    server = ApiServer(tmp_path / "a", config, zookeeper.hosts, free_port())
    try:
        server.proc.popen.wait(timeout=60)
        assert (
            "api.keys 'short': the key in" in server.proc.log.read_text()
            and "at least 32" in server.proc.log.read_text()
        )
    finally:
        server.stop()
