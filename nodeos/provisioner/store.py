"""The provisioner's objects in PostgreSQL. Every function takes the cursor of one transaction
(`Database.transaction`), so a check and the write it guards commit together.

Objects are found by name. A reference to a missing object is Invalid naming the request field; removing an object
that others use is InUse naming them (the foreign keys refuse it too, should a check ever miss one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import psycopg2.errors
from psycopg2.extras import Json

from pvc.nodeos.provisioner.db import Cursor
from pvc.nodeos.provisioner.errors import Exists, InUse, Invalid, Missing
from pvc.nodeos.provisioner.models import (
    ImageView,
    NetworkTemplate,
    NetworkTemplateView,
    Profile,
    ProfileView,
    StorageTemplate,
    StorageTemplateView,
    SystemTemplate,
    SystemTemplateView,
    Userdata,
    UserdataSummary,
    UserdataView,
)
from pvc.nodeos.provisioner.userdata import classify

M = TypeVar("M", SystemTemplate, NetworkTemplate, StorageTemplate, Userdata, Profile)
Change = Callable[[M], M]  # the current object → the changed one (validated)

STAMPS = "extract(epoch FROM t.created_at)::float8 AS created, extract(epoch FROM t.updated_at)::float8 AS updated"
WHAT = {
    "system_template": "system template",
    "network_template": "network template",
    "storage_template": "storage template",
    "userdata": "userdata document",
    "profile": "profile",
    "image": "image",
    "ova": "OVA",
}


def _users(table: str) -> str:
    """SQL: the names of the profiles that use row t of `table`."""
    return f"ARRAY(SELECT p.name FROM profile p WHERE p.{table} = t.id ORDER BY p.name) AS profiles"


def _id(cur: Cursor, table: str, name: str, field: str | None = None, lock: bool = False) -> int:
    """The id of `table`'s object `name`: Missing (404) when there is none, or Invalid naming `field` when the
    name came as a reference in a request."""
    cur.execute(f"SELECT id FROM {table} WHERE name = %s" + (" FOR UPDATE" if lock else ""), (name,))
    row = cur.fetchone()
    if row is None:
        if field is not None:
            raise Invalid(f"{field}: {WHAT[table]} '{name}' does not exist", field)
        raise Missing(f"no {WHAT[table]} '{name}'")
    return int(row["id"])


def _insert(cur: Cursor, table: str, values: dict[str, Any]) -> int:
    columns = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    cur.execute(
        f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT (name) DO NOTHING RETURNING id",
        list(values.values()),
    )
    row = cur.fetchone()
    if row is None:
        raise Exists(f"{WHAT[table]} '{values['name']}' already exists", "name")
    return int(row["id"])


def _update(cur: Cursor, table: str, row_id: int, values: dict[str, Any]) -> None:
    sets = ", ".join(f"{c} = %s" for c in values)
    cur.execute(f"UPDATE {table} SET {sets}, updated_at = now() WHERE id = %s", [*values.values(), row_id])


def _remove(cur: Cursor, table: str, name: str, users: Callable[[int], list[str]]) -> None:
    row_id = _id(cur, table, name, lock=True)
    using = users(row_id)
    if using:
        raise InUse(f"{WHAT[table]} '{name}' is in use by {', '.join(using)}: change or remove them first")
    try:
        cur.execute(f"DELETE FROM {table} WHERE id = %s", (row_id,))
    except psycopg2.errors.ForeignKeyViolation:
        raise InUse(f"{WHAT[table]} '{name}' is in use") from None


def _profile_users(cur: Cursor, column: str) -> Callable[[int], list[str]]:
    def users(row_id: int) -> list[str]:
        cur.execute(f"SELECT name FROM profile WHERE {column} = %s ORDER BY name", (row_id,))
        return [f"profile {r['name']}" for r in cur.fetchall()]

    return users


def _one(cur: Cursor, name: str, table: str) -> dict[str, Any]:
    row = cur.fetchone()
    if row is None:
        raise Missing(f"no {WHAT[table]} '{name}'")
    return dict(row)


# -- system templates ---------------------------------------------------------------------------------------------
def _system_values(t: SystemTemplate) -> dict[str, Any]:
    values = t.model_dump(exclude={"name", "topology"})
    topo = t.topology
    values.update(
        sockets=topo.sockets if topo else None,
        cores=topo.cores if topo else None,
        threads=topo.threads if topo else None,
    )
    return values


def _system_fields(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("id", "sockets", "cores", "threads", "created_at", "updated_at")}
    if row["sockets"] is not None:
        out["topology"] = {"sockets": row["sockets"], "cores": row["cores"], "threads": row["threads"]}
    return out


SYSTEM_SELECT = f"SELECT t.*, {STAMPS}, {_users('system_template')} FROM system_template t"


def list_system_templates(cur: Cursor) -> list[SystemTemplateView]:
    cur.execute(SYSTEM_SELECT + " ORDER BY t.name")
    return [SystemTemplateView.model_validate(_system_fields(dict(r))) for r in cur.fetchall()]


def get_system_template(cur: Cursor, name: str) -> SystemTemplateView:
    cur.execute(SYSTEM_SELECT + " WHERE t.name = %s", (name,))
    return SystemTemplateView.model_validate(_system_fields(_one(cur, name, "system_template")))


def add_system_template(cur: Cursor, t: SystemTemplate) -> SystemTemplateView:
    _insert(cur, "system_template", {"name": t.name, **_system_values(t)})
    return get_system_template(cur, t.name)


def modify_system_template(cur: Cursor, name: str, change: Change[SystemTemplate]) -> SystemTemplateView:
    row_id = _id(cur, "system_template", name, lock=True)
    current = get_system_template(cur, name)
    new = change(SystemTemplate.model_validate(current.model_dump(include=set(SystemTemplate.model_fields))))
    _update(cur, "system_template", row_id, _system_values(new))
    return get_system_template(cur, name)


def remove_system_template(cur: Cursor, name: str) -> None:
    _remove(cur, "system_template", name, _profile_users(cur, "system_template"))


# -- network templates --------------------------------------------------------------------------------------------
NETWORK_SELECT = f"""SELECT t.name, t.description, t.mac_template, {STAMPS}, {_users("network_template")},
    coalesce((SELECT json_agg(json_build_object('network', n.network, 'model', n.model) ORDER BY n.position)
              FROM network_template_nic n WHERE n.template = t.id), '[]') AS nics
    FROM network_template t"""


def list_network_templates(cur: Cursor) -> list[NetworkTemplateView]:
    cur.execute(NETWORK_SELECT + " ORDER BY t.name")
    return [NetworkTemplateView.model_validate(dict(r)) for r in cur.fetchall()]


def get_network_template(cur: Cursor, name: str) -> NetworkTemplateView:
    cur.execute(NETWORK_SELECT + " WHERE t.name = %s", (name,))
    return NetworkTemplateView.model_validate(_one(cur, name, "network_template"))


def _put_nics(cur: Cursor, row_id: int, t: NetworkTemplate) -> None:
    cur.execute("DELETE FROM network_template_nic WHERE template = %s", (row_id,))
    for position, nic in enumerate(t.nics):
        cur.execute(
            "INSERT INTO network_template_nic (template, position, network, model) VALUES (%s, %s, %s, %s)",
            (row_id, position, nic.network, nic.model),
        )


def add_network_template(cur: Cursor, t: NetworkTemplate) -> NetworkTemplateView:
    row_id = _insert(
        cur, "network_template", {"name": t.name, "description": t.description, "mac_template": t.mac_template}
    )
    _put_nics(cur, row_id, t)
    return get_network_template(cur, t.name)


def modify_network_template(cur: Cursor, name: str, change: Change[NetworkTemplate]) -> NetworkTemplateView:
    row_id = _id(cur, "network_template", name, lock=True)
    current = get_network_template(cur, name)
    new = change(NetworkTemplate.model_validate(current.model_dump(include=set(NetworkTemplate.model_fields))))
    _update(cur, "network_template", row_id, {"description": new.description, "mac_template": new.mac_template})
    _put_nics(cur, row_id, new)
    return get_network_template(cur, name)


def remove_network_template(cur: Cursor, name: str) -> None:
    _remove(cur, "network_template", name, _profile_users(cur, "network_template"))


# -- storage templates --------------------------------------------------------------------------------------------
STORAGE_SELECT = f"""SELECT t.name, t.description, {STAMPS}, {_users("storage_template")},
    coalesce((SELECT json_agg(json_build_object('id', d.disk_id, 'pool', d.pool, 'size', d.size_bytes,
                                                'image', i.name, 'bus', d.bus) ORDER BY d.position)
              FROM storage_template_disk d LEFT JOIN image i ON i.id = d.image WHERE d.template = t.id), '[]') AS disks
    FROM storage_template t"""


def list_storage_templates(cur: Cursor) -> list[StorageTemplateView]:
    cur.execute(STORAGE_SELECT + " ORDER BY t.name")
    return [StorageTemplateView.model_validate(dict(r)) for r in cur.fetchall()]


def get_storage_template(cur: Cursor, name: str) -> StorageTemplateView:
    cur.execute(STORAGE_SELECT + " WHERE t.name = %s", (name,))
    return StorageTemplateView.model_validate(_one(cur, name, "storage_template"))


def _put_disks(cur: Cursor, row_id: int, t: StorageTemplate) -> None:
    cur.execute("DELETE FROM storage_template_disk WHERE template = %s", (row_id,))
    for position, disk in enumerate(t.disks):
        image = _id(cur, "image", disk.image, f"disks.{position}.image") if disk.image else None
        cur.execute(
            "INSERT INTO storage_template_disk (template, position, disk_id, pool, size_bytes, image, bus) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (row_id, position, disk.id, disk.pool, disk.size, image, disk.bus),
        )


def add_storage_template(cur: Cursor, t: StorageTemplate) -> StorageTemplateView:
    row_id = _insert(cur, "storage_template", {"name": t.name, "description": t.description})
    _put_disks(cur, row_id, t)
    return get_storage_template(cur, t.name)


def modify_storage_template(cur: Cursor, name: str, change: Change[StorageTemplate]) -> StorageTemplateView:
    row_id = _id(cur, "storage_template", name, lock=True)
    current = get_storage_template(cur, name)
    new = change(StorageTemplate.model_validate(current.model_dump(include=set(StorageTemplate.model_fields))))
    _update(cur, "storage_template", row_id, {"description": new.description})
    _put_disks(cur, row_id, new)
    return get_storage_template(cur, name)


def remove_storage_template(cur: Cursor, name: str) -> None:
    _remove(cur, "storage_template", name, _profile_users(cur, "storage_template"))


# -- userdata -----------------------------------------------------------------------------------------------------
USERDATA_SELECT = f"""SELECT t.name, t.description, t.kind, octet_length(t.body) AS size, {STAMPS},
    {_users("userdata")} FROM userdata t"""


def list_userdata(cur: Cursor) -> list[UserdataSummary]:
    cur.execute(USERDATA_SELECT + " ORDER BY t.name")
    return [UserdataSummary.model_validate(dict(r)) for r in cur.fetchall()]


def get_userdata(cur: Cursor, name: str) -> UserdataView:
    cur.execute(USERDATA_SELECT.replace(" FROM userdata t", ", t.body FROM userdata t") + " WHERE t.name = %s", (name,))
    return UserdataView.model_validate(_one(cur, name, "userdata"))


def add_userdata(cur: Cursor, u: Userdata) -> UserdataView:
    _insert(cur, "userdata", {"name": u.name, "description": u.description, "kind": classify(u.body), "body": u.body})
    return get_userdata(cur, u.name)


def modify_userdata(cur: Cursor, name: str, change: Change[Userdata]) -> UserdataView:
    row_id = _id(cur, "userdata", name, lock=True)
    current = get_userdata(cur, name)
    new = change(Userdata.model_validate(current.model_dump(include=set(Userdata.model_fields))))
    _update(cur, "userdata", row_id, {"description": new.description, "kind": classify(new.body), "body": new.body})
    return get_userdata(cur, name)


def remove_userdata(cur: Cursor, name: str) -> None:
    _remove(cur, "userdata", name, _profile_users(cur, "userdata"))


# -- profiles -----------------------------------------------------------------------------------------------------
REFERENCES = ("system_template", "network_template", "storage_template", "userdata", "ova")
PROFILE_SELECT = f"""SELECT t.name, t.description, t.kind, t.arguments, t.metadata, {STAMPS},
    s.name AS system_template, n.name AS network_template, g.name AS storage_template, u.name AS userdata,
    o.name AS ova
    FROM profile t JOIN system_template s ON s.id = t.system_template
    LEFT JOIN network_template n ON n.id = t.network_template LEFT JOIN storage_template g ON g.id = t.storage_template
    LEFT JOIN userdata u ON u.id = t.userdata LEFT JOIN ova o ON o.id = t.ova"""


def list_profiles(cur: Cursor) -> list[ProfileView]:
    cur.execute(PROFILE_SELECT + " ORDER BY t.name")
    return [ProfileView.model_validate(dict(r)) for r in cur.fetchall()]


def get_profile(cur: Cursor, name: str) -> ProfileView:
    cur.execute(PROFILE_SELECT + " WHERE t.name = %s", (name,))
    return ProfileView.model_validate(_one(cur, name, "profile"))


def _profile_values(cur: Cursor, p: Profile) -> dict[str, Any]:
    """The profile's columns, each reference resolved to its id (Invalid naming the field when it is missing)."""
    values: dict[str, Any] = {
        "description": p.description,
        "kind": p.kind,
        "arguments": Json(p.arguments),
        "metadata": Json(p.metadata),
    }
    for field in REFERENCES:
        ref = getattr(p, field)
        values[field] = _id(cur, field, ref, field) if ref is not None else None
    return values


def add_profile(cur: Cursor, p: Profile) -> ProfileView:
    _insert(cur, "profile", {"name": p.name, **_profile_values(cur, p)})
    return get_profile(cur, p.name)


def modify_profile(cur: Cursor, name: str, change: Change[Profile]) -> ProfileView:
    row_id = _id(cur, "profile", name, lock=True)
    current = get_profile(cur, name)
    new = change(Profile.model_validate(current.model_dump(include=set(Profile.model_fields))))
    _update(cur, "profile", row_id, _profile_values(cur, new))
    return get_profile(cur, name)


def remove_profile(cur: Cursor, name: str) -> None:
    _remove(cur, "profile", name, lambda row_id: [])


# -- images -------------------------------------------------------------------------------------------------------
IMAGE_SELECT = """SELECT t.name, t.description, t.pool, t.volume, t.snapshot, t.format, t.size_bytes AS size,
    extract(epoch FROM t.created_at)::float8 AS created,
    ARRAY(SELECT DISTINCT g.name FROM storage_template_disk d JOIN storage_template g ON g.id = d.template
          WHERE d.image = t.id ORDER BY g.name) AS storage_templates,
    ARRAY(SELECT DISTINCT p.name FROM profile p JOIN storage_template_disk d ON d.template = p.storage_template
          WHERE d.image = t.id ORDER BY p.name) AS profiles
    FROM image t"""


def list_images(cur: Cursor) -> list[ImageView]:
    cur.execute(IMAGE_SELECT + " ORDER BY t.name")
    return [ImageView.model_validate(dict(r)) for r in cur.fetchall()]


def get_image(cur: Cursor, name: str) -> ImageView:
    cur.execute(IMAGE_SELECT + " WHERE t.name = %s", (name,))
    return ImageView.model_validate(_one(cur, name, "image"))


def image_exists(cur: Cursor, name: str) -> bool:
    cur.execute("SELECT 1 FROM image WHERE name = %s", (name,))
    return cur.fetchone() is not None


def add_image(cur: Cursor, image: ImageView) -> ImageView:
    values = image.model_dump(include={"name", "description", "pool", "volume", "snapshot", "format"})
    _insert(cur, "image", {**values, "size_bytes": image.size})
    return get_image(cur, image.name)


def image_users(cur: Cursor, name: str) -> list[str]:
    """The storage templates (and through them the profiles) that clone image `name`, for a refusal."""
    image = get_image(cur, name)
    users = [f"storage template {t}" for t in image.storage_templates]
    return users + [f"profile {p}" for p in image.profiles]


def remove_image(cur: Cursor, name: str) -> None:
    _remove(cur, "image", name, lambda row_id: image_users(cur, name))
