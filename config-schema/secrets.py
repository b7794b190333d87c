"""Every cluster secret, derived from the one join key (DESIGN.md, decision 1).

HKDF-SHA256 (RFC 5869) with a fixed salt and one fixed label ("info") per secret, so every node computes the same
values with no exchange and no leader. The labels below are part of the on-disk format of every cluster ever
formed: never change one; add new labels instead.
"""

from __future__ import annotations

import base64
import hashlib
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex  # the standard library's (this module's name is the same)

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from pvc.config.checks import published_key_problem
from pvc.config.load import resolve_file
from pvc.config.schema import JOIN_KEY_RE, ClusterFile

SALT = b"pvc/join-key/v1"

LABEL_CEPH_FSID = "ceph/fsid"
LABEL_CEPH_KEY = "ceph/key/{entity}"  # entity: mon., client.admin, client.bootstrap-osd, mgr.<node>, client.libvirt
LABEL_ZK_PASSWORD = "zookeeper/digest/{user}"
LABEL_PG_PASSWORD = "postgresql/password/{role}"
LABEL_LIBVIRT_SECRET_UUID = "libvirt/secret-uuid/ceph"
LABEL_API_KEY = "api/initial-key"
LABEL_API_KEY_PEPPER = "api/key-pepper"  # the HMAC key API key digests are made with (pvc.api.keys)
LABEL_PATRONI_REST = "patroni/restapi/{user}"
# The cluster CA and the node keys it certifies (pki.py): P-256 scalars
LABEL_PKI_CA_KEY = "pki/ca/key"
LABEL_PKI_NODE_KEY = "pki/node/{node}/key"  # libvirtd (server and p2p client), later the API
LABEL_PKI_MIGRATION_KEY = "pki/migration/{node}/key"  # QEMU's migration stream: a separate identity (pki.py)
LABEL_VM_MAC_PREFIX = "vm/mac-prefix"
LABEL_PKI_API_KEY = "pki/api/{node}/key"  # the API's HTTPS server: a separate identity, readable by pvc-api

ZK_USER = "pvc"
PATRONI_REST_USER = "pvc"
PG_ROLES = ("superuser", "replication", "rewind", "app")
LIBVIRT_CEPH_USER = "libvirt"  # client.libvirt (mon/osd/mgr 'profile rbd'): how QEMU reaches VM disks
CEPH_ENTITIES = ("mon.", "client.admin", "client.bootstrap-osd", f"client.{LIBVIRT_CEPH_USER}")


def read_join_key(cfg: ClusterFile, base_dir: Path | None) -> str:
    """The join key, inline or from its file. Raises ValueError with a message naming the file (never the key): also
    for a key published in PVC's examples, outside the lab."""
    if cfg.cluster.join_key is not None:
        key = cfg.cluster.join_key
        where = "cluster.join_key"
    else:
        assert cfg.cluster.join_key_file is not None
        path = resolve_file(cfg.cluster.join_key_file, base_dir)
        where = f"cluster.join_key_file '{path}'"
        try:
            key = path.read_text().strip()
        except OSError as exc:
            raise ValueError(f"cluster.join_key_file: cannot read '{path}': {exc.strerror or exc}") from None
        if not JOIN_KEY_RE.match(key):
            raise ValueError(f"{where} does not hold a join key (64 lower-case hex characters)")
    if why := published_key_problem(cfg, key):
        raise ValueError(f"{where}: {why}")
    return key


def derive(join_key: str, label: str, length: int = 32) -> bytes:
    """`length` bytes for `label` from the join key (64 hex characters)."""
    ikm = bytes.fromhex(join_key)
    if len(ikm) != 32:
        raise ValueError("the join key must be 32 bytes (64 hex characters)")
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=SALT, info=label.encode()).derive(ikm)


def _uuid(join_key: str, label: str) -> str:
    return str(uuid.UUID(bytes=derive(join_key, label, 16), version=4))


def _password(join_key: str, label: str) -> str:
    # URL-safe base64 without padding: 43 characters, no quoting needed in any config file format we render.
    return base64.urlsafe_b64encode(derive(join_key, label, 32)).rstrip(b"=").decode()


def ceph_fsid(join_key: str) -> str:
    return _uuid(join_key, LABEL_CEPH_FSID)


def ceph_key(join_key: str, entity: str) -> str:
    """A cephx secret in Ceph's own keyring format: base64 of (type=AES, created=0, len=16, 16 key bytes)."""
    secret = derive(join_key, LABEL_CEPH_KEY.format(entity=entity), 16)
    header = struct.pack("<HIIH", 1, 0, 0, len(secret))
    return base64.b64encode(header + secret).decode()


def zookeeper_password(join_key: str, user: str = ZK_USER) -> str:
    return _password(join_key, LABEL_ZK_PASSWORD.format(user=user))


def zookeeper_digest(user: str, password: str) -> str:
    """The `user:base64(sha1(user:password))` form ZooKeeper's digest ACLs store."""
    digest = base64.b64encode(hashlib.sha1(f"{user}:{password}".encode()).digest()).decode()
    return f"{user}:{digest}"


def postgresql_password(join_key: str, role: str) -> str:
    if role not in PG_ROLES:
        raise ValueError(f"unknown PostgreSQL role '{role}' (known: {', '.join(PG_ROLES)})")
    return _password(join_key, LABEL_PG_PASSWORD.format(role=role))


def libvirt_secret_uuid(join_key: str) -> str:
    return _uuid(join_key, LABEL_LIBVIRT_SECRET_UUID)


def initial_api_key(join_key: str) -> str:
    return _password(join_key, LABEL_API_KEY)


def api_key_pepper(join_key: str) -> bytes:
    """The secret HMAC key of API key digests (pvc.api.keys): a copy of ZooKeeper's /pvc/api_keys is useless to a
    brute-force attack without the join key."""
    return derive(join_key, LABEL_API_KEY_PEPPER)


def patroni_rest_password(join_key: str, user: str = PATRONI_REST_USER) -> str:
    """Basic-auth password of Patroni's REST API (its unsafe endpoints: restart, failover, config, ...)."""
    return _password(join_key, LABEL_PATRONI_REST.format(user=user))


def vm_mac_prefix(join_key: str) -> str:
    """The cluster's first three MAC octets for the VM NICs PVC numbers itself ("x2:xx:xx"): locally administered
    (bit 1 of the first octet set) and unicast (bit 0 clear), so they never clash with a vendor's addresses, and
    different for each cluster, so two clusters on one network do not hand out the same addresses."""
    raw = bytearray(derive(join_key, LABEL_VM_MAC_PREFIX, 3))
    raw[0] = (raw[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in raw)


@dataclass(frozen=True)
class ClusterSecrets:
    """All derived secrets of one cluster, for the renderers and the API."""

    ceph_fsid: str
    ceph_keys: dict[str, str]
    zookeeper_user: str
    zookeeper_password: str
    postgresql_passwords: dict[str, str]
    libvirt_secret_uuid: str
    api_key: str


def cluster_secrets(join_key: str, node_names: list[str]) -> ClusterSecrets:
    entities = [*CEPH_ENTITIES, *(f"mgr.{name}" for name in node_names)]
    return ClusterSecrets(
        ceph_fsid=ceph_fsid(join_key),
        ceph_keys={entity: ceph_key(join_key, entity) for entity in entities},
        zookeeper_user=ZK_USER,
        zookeeper_password=zookeeper_password(join_key),
        postgresql_passwords={role: postgresql_password(join_key, role) for role in PG_ROLES},
        libvirt_secret_uuid=libvirt_secret_uuid(join_key),
        api_key=initial_api_key(join_key),
    )


def new_join_key() -> str:
    return token_hex(32)
