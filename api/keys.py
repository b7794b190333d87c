"""API keys: how they are kept (digests), matched, made, and seeded from cluster.toml. docs/security.md, "API keys".

A key is never stored. Its record (ApiKeyRecord, in ZooKeeper under /pvc/api_keys) holds
HMAC-SHA256(pepper, salt || key). The pepper derives from the join key (secrets.api_key_pepper) and lives only in
the API's memory, so a copy of ZooKeeper's data is worth nothing to an offline search without the join key; the
salt (16 random bytes for a key made at run time, a fixed string per name for cluster.toml's keys, so that seeding
at every start writes nothing new) makes equal keys differ. No slow hash (scrypt, argon2): every request is compared
with every key, with no early exit, so a slow hash would cost its time once per key per request; the keys are
256-bit random values (`pvc cluster key add`) or at least 32 characters (cluster.toml), beyond any online or
offline search, and the pepper covers a weak configured key. A key cluster.toml gives as `sha256 = ...` stays that
digest (scheme "sha256"): the file never held the key, so there is nothing to HMAC.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pvc.config.choices import API_ROLES, ApiRole
from pvc.config.load import resolve_file
from pvc.config.schema import API_KEY_MIN_LENGTH, INITIAL_KEY_NAME, ApiKey
from pvc.nodeos.state.models import ApiKeyRecord, KeyOwner
from pvc.nodeos.state.store import ClusterState, Conflict, NotFound

log = logging.getLogger("pvc.api.keys")
SALT_BYTES = 16


def allows(have: str, need: str) -> bool:
    """Whether a key of role `have` may do what needs role `need` (roles in increasing power: API_ROLES)."""
    return API_ROLES.index(have) >= API_ROLES.index(need)


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def hmac_digest(pepper: bytes, salt: bytes, key: str) -> bytes:
    return hmac.new(pepper, salt + key.encode(), hashlib.sha256).digest()


def record(
    name: str, role: ApiRole, owner: KeyOwner, key: str, pepper: bytes, salt: bytes | None = None
) -> ApiKeyRecord:
    """The record of `key` (a random salt unless one is given)."""
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    return ApiKeyRecord(name=name, role=role, owner=owner, salt=salt.hex(), digest=hmac_digest(pepper, salt, key).hex())


def fixed_salt(name: str) -> bytes:
    """The salt of a key whose record is computed again at every start (cluster.toml's, the derived one)."""
    return f"pvc/api-key/{name}".encode()


def match(records: Iterable[ApiKeyRecord], presented: str, pepper: bytes) -> ApiKeyRecord | None:
    """The record `presented` is the key of (revoked or not), comparing with every record in constant time and with
    no early exit: the time taken does not tell which record matched, or how close a guess came."""
    plain = hashlib.sha256(presented.encode()).digest()
    found = None
    for rec in records:
        candidate = plain if rec.scheme == "sha256" else hmac_digest(pepper, bytes.fromhex(rec.salt), presented)
        if hmac.compare_digest(candidate, bytes.fromhex(rec.digest)):
            found = rec
    return found


# -- what the API knows at start: the pepper and the records cluster.toml implies ------------------------------------
@dataclass(frozen=True)
class KeyMaterial:
    pepper: bytes
    initial: ApiKeyRecord  # the key derived from the join key (owner "derived")
    configured: tuple[ApiKeyRecord, ...]  # cluster.toml's [api] keys (owner "config")


class KeyFileError(Exception):
    """A key file named in cluster.toml cannot be used; the message names the key and the file."""


def configured_record(key: ApiKey, base_dir: Path | None, pepper: bytes) -> ApiKeyRecord:
    """The record of one [api] key of cluster.toml. Raises KeyFileError for an unreadable or too short key file."""
    if key.sha256 is not None:
        return ApiKeyRecord(name=key.name, role=key.role, owner="config", scheme="sha256", digest=key.sha256)
    if key.key is not None:
        text = key.key
    else:
        path = resolve_file(key.key_file or "", base_dir)
        try:
            text = path.read_text().strip()
        except OSError as exc:
            raise KeyFileError(f"api.keys '{key.name}': cannot read {path}: {exc.strerror}") from None
        if len(text) < API_KEY_MIN_LENGTH:
            raise KeyFileError(
                f"api.keys '{key.name}': the key in {path} is {len(text)} characters long; at least "
                f"{API_KEY_MIN_LENGTH} are needed"
            )
    return record(key.name, key.role, "config", text, pepper, fixed_salt(key.name))


def key_material(keys: Iterable[ApiKey], base_dir: Path | None, pepper: bytes, initial_key: str) -> KeyMaterial:
    initial = record(INITIAL_KEY_NAME, "admin", "derived", initial_key, pepper, fixed_salt(INITIAL_KEY_NAME))
    return KeyMaterial(pepper, initial, tuple(configured_record(k, base_dir, pepper) for k in keys))


# -- seeding ---------------------------------------------------------------------------------------------------------
def _same(a: ApiKeyRecord, b: ApiKeyRecord) -> bool:
    fields = ("role", "owner", "scheme", "salt", "digest")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def seed(state: ClusterState, material: KeyMaterial) -> None:
    """Make /pvc/api_keys hold what cluster.toml says: the derived key and every [api] key, as config-owned records
    (a revoked one stays revoked: the mark is kept), and no config-owned key the file no longer lists. Keys made at
    run time are left alone, unless cluster.toml now declares a key of the same name: the file wins.
    Idempotent, and safe to run in several workers at once."""
    existing = {r.name: r for r in state.api_keys()}
    wanted = [material.initial, *material.configured]
    for want in wanted:
        current = existing.get(want.name)
        try:
            if current is None:
                state.create_api_key(want)
            elif not _same(current, want):
                if current.owner == "api":
                    log.warning("cluster.toml declares API key '%s': it replaces the key made at run time", want.name)
                keep: dict[str, object] = {"created": current.created} if current.owner == want.owner else {}
                if current.owner == want.owner:
                    keep |= {"revoked": current.revoked, "revoked_at": current.revoked_at}
                state.put_api_key(want.model_copy(update=keep))
        except Conflict:
            continue  # another worker seeded it at the same moment, with the same record
    names = {w.name for w in wanted}
    for name, current in existing.items():
        if current.owner == "config" and name not in names:
            log.info("API key '%s' is no longer in cluster.toml: removed", name)
            try:
                state.remove_api_key(name)
            except (NotFound, Conflict):
                continue  # another worker removed (or changed) it meanwhile
