"""The ZooKeeper key layout, declared once. Nothing else in PVC spells a path.

Every record is one znode holding JSON (models.py gives its shape). Bump SCHEMA_VERSION and add a migration in
migrations.py whenever a path or a record changes incompatibly.
"""

from __future__ import annotations

from urllib.parse import quote

SCHEMA_VERSION = 3  # 2: the VM name index (VM_NAMES); 3: typed VM definitions and the MAC index (VM_MACS)
ROOT = "/pvc"

SCHEMA = f"{ROOT}/schema"  # {"version": int}
CONFIG = f"{ROOT}/config"
MAINTENANCE = f"{CONFIG}/maintenance"  # {"enabled": bool}
PRIMARY_REQUEST = f"{CONFIG}/primary_request"  # Primary: the coordinator an administrator asked to be primary
ELECTION = f"{ROOT}/election"  # kazoo Election recipe: the primary coordinator
PRIMARY = f"{ROOT}/primary"  # ephemeral {"node": str, "since": float}, written by the primary
NODES = f"{ROOT}/nodes"
VMS = f"{ROOT}/vms"
VM_NAMES = f"{ROOT}/vm_names"  # the name index: one child per VM name, written in the VM's own transactions
VM_MACS = f"{ROOT}/vm_macs"  # the MAC index: one child per NIC MAC address, written in the VM's own transactions
LOCKS = f"{ROOT}/locks"
FAULTS = f"{ROOT}/faults"
FORMATION = f"{ROOT}/formation"
TASKS = f"{ROOT}/tasks"
NETWORKS = f"{ROOT}/networks"
STORAGE = f"{ROOT}/storage"
API_KEYS = f"{ROOT}/api_keys"  # one ApiKeyRecord per key name: digests only, never a key (pvc.api.keys)
DATA_DISKS = f"{ROOT}/data_disks"

STORAGE_STATUS = f"{STORAGE}/status"  # StorageStatus: Ceph health and usage, written by the primary every interval
OSD_REQUESTS = f"{STORAGE}/osd_requests"

# Every path that must exist before the daemons run.
BASE_PATHS = (
    ROOT,
    CONFIG,
    ELECTION,
    NODES,
    VMS,
    VM_NAMES,
    VM_MACS,
    LOCKS,
    FAULTS,
    FORMATION,
    TASKS,
    NETWORKS,
    STORAGE,
    API_KEYS,
)


def node(name: str) -> str:
    return f"{NODES}/{name}"  # NodeRecord


def node_keepalive(name: str) -> str:
    return f"{NODES}/{name}/keepalive"  # Keepalive; its mtime (ZooKeeper's clock) is the liveness signal


def node_alive(name: str) -> str:
    return f"{NODES}/{name}/alive"  # ephemeral: exists while the node's pvcd holds a session


def node_log(name: str) -> str:
    return f"{NODES}/{name}/log"  # LogRing


def vm(uuid: str) -> str:
    return f"{VMS}/{uuid}"  # VmSpec: desired state, written by the API (and by the daemons' hand-offs)


def vm_name(name: str) -> str:
    """VmName: which VM holds the name. Percent-encoded, so any VM name is one znode name ("." and ".." too)."""
    encoded = quote(name, safe="")
    return f"{VM_NAMES}/{encoded if encoded not in ('.', '..') else encoded.replace('.', '%2E')}"


def vm_mac(mac: str) -> str:
    return f"{VM_MACS}/{mac}"  # VmMac: which VM holds the MAC ("52:54:00:12:34:56": lower-case, colons)


def vm_status(uuid: str) -> str:
    return f"{VMS}/{uuid}/status"  # VmStatus: what the node running it observes


def vm_console(uuid: str) -> str:
    return f"{VMS}/{uuid}/console"  # LogRing of the serial console


def vm_seed(uuid: str) -> str:
    return f"{VMS}/{uuid}/seed"  # VmSeed: the cloud-init documents of a created VM, for the metadata service


def lock(name: str) -> str:
    return f"{LOCKS}/{name}"  # kazoo Lock recipes: "fence", "pools", ...


def fault(fault_id: str) -> str:
    return f"{FAULTS}/{fault_id}"  # Fault


def formation(node_name: str) -> str:
    return f"{FORMATION}/{node_name}"  # FormationProgress


def data_disk(node_name: str) -> str:
    return f"{DATA_DISKS}/{node_name}"  # DataDisk: the disk holding the node's PVCDATA


def task(task_id: str) -> str:
    return f"{TASKS}/{task_id}"  # Task


def network(vni: int) -> str:
    return f"{NETWORKS}/{vni}"  # NetworkRecord: a client network (its VNI; a bridged network's VLAN id)


def network_leases(vni: int) -> str:
    return f"{NETWORKS}/{vni}/leases"


def network_lease(vni: int, mac: str) -> str:
    return f"{NETWORKS}/{vni}/leases/{mac}"  # Lease: written by the primary's dnsmasq through pvcd (its lease hook)


def storage(name: str) -> str:
    return f"{STORAGE}/{name}"  # cluster-wide storage facts kept by the primary ("status", "pools", ...)


def osd_request(request_id: str) -> str:
    return f"{OSD_REQUESTS}/{request_id}"  # OsdRequest: "make OSDs of the disks matching this selector on a node"


def api_key(name: str) -> str:
    return f"{API_KEYS}/{name}"  # ApiKeyRecord; names are [A-Za-z0-9_.-], so one znode name each
