"""The provisioner's objects in PostgreSQL. Every function takes the cursor of one transaction
(`Database.transaction`), so a check and the write it guards commit together.

Templates, userdata and profiles are each a `Table`: how its rows are read (one SELECT, children as JSON), which
columns an object writes, and which rows of other tables it owns (NICs, disks). Objects are found by name. A
reference to a missing object is Invalid naming the request field; removing an object others use is InUse naming
them (the foreign keys refuse it too, should a check ever miss one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg2.errors
from psycopg2.extras import Json
from pydantic import BaseModel

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

M = TypeVar("M", bound=BaseModel)
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


def _one(cur: Cursor, name: str, table: str) -> dict[str, Any]:
    row = cur.fetchone()
    if row is None:
        raise Missing(f"no {WHAT[table]} '{name}'")
    return dict(row)


def _insert(cur: Cursor, table: str, values: dict[str, Any]) -> int:
    """The id of a new row of `table`; Exists (409) when its name is taken."""
    cur.execute(
        f"INSERT INTO {table} ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))}) "
        "ON CONFLICT (name) DO NOTHING RETURNING id",
        list(values.values()),
    )
    row = cur.fetchone()
    if row is None:
        raise Exists(f"{WHAT[table]} '{values['name']}' already exists", "name")
    return int(row["id"])


def _remove(cur: Cursor, table: str, name: str, users: Callable[[int], list[str]]) -> None:
    row_id = _id(cur, table, name, lock=True)
    using = users(row_id)
    if using:
        raise InUse(f"{WHAT[table]} '{name}' is in use by {', '.join(using)}: change or remove them first")
    try:
        cur.execute(f"DELETE FROM {table} WHERE id = %s", (row_id,))
    except psycopg2.errors.ForeignKeyViolation:
        raise InUse(f"{WHAT[table]} '{name}' is in use") from None


@dataclass(frozen=True)
class Table(Generic[M]):
    """One kind of object: `table`'s rows read by `select` (aliased t; adding `body` for one object's info) into
    `view` (`summary` in lists), written from `model` by `values` (its columns but the name) and `children` (the
    rows it owns, written again whole)."""

    table: str
    model: type[M]
    view: type[BaseModel]
    select: str
    values: Callable[[Cursor, M], dict[str, Any]]
    children: Callable[[Cursor, int, M], None] = lambda cur, row_id, obj: None
    summary: type[BaseModel] | None = None
    detail: str = ""  # columns only one object's info reads (a userdata document's body)
    row: Callable[[dict[str, Any]], dict[str, Any]] = dict  # a row as the view's fields
    used_by_profiles: bool = True

    def _select(self, detail: bool) -> str:
        return self.select.replace("SELECT ", f"SELECT {self.detail}, ", 1) if detail and self.detail else self.select

    def list(self, cur: Cursor) -> list[Any]:
        cur.execute(self._select(False) + " ORDER BY t.name")
        model = self.summary or self.view
        return [model.model_validate(self.row(dict(r))) for r in cur.fetchall()]

    def get(self, cur: Cursor, name: str) -> Any:
        cur.execute(self._select(True) + " WHERE t.name = %s", (name,))
        return self.view.model_validate(self.row(_one(cur, name, self.table)))

    def add(self, cur: Cursor, obj: M) -> Any:
        name = getattr(obj, "name")  # noqa: B009 - every model has one
        self.children(cur, _insert(cur, self.table, {"name": name, **self.values(cur, obj)}), obj)
        return self.get(cur, name)

    def modify(self, cur: Cursor, name: str, change: Callable[[M], M]) -> Any:
        """`change` (the stored object → the new one, validated) applied, in the transaction that locks the row."""
        row_id = _id(cur, self.table, name, lock=True)
        current = self.model.model_validate(self.get(cur, name).model_dump(include=set(self.model.model_fields)))
        new = change(current)
        values = self.values(cur, new)
        sets = ", ".join(f"{c} = %s" for c in values)
        cur.execute(f"UPDATE {self.table} SET {sets}, updated_at = now() WHERE id = %s", [*values.values(), row_id])
        self.children(cur, row_id, new)
        return self.get(cur, name)

    def remove(self, cur: Cursor, name: str) -> None:
        def users(row_id: int) -> list[str]:
            if not self.used_by_profiles:
                return []
            cur.execute(f"SELECT name FROM profile WHERE {self.table} = %s ORDER BY name", (row_id,))
            return [f"profile {r['name']}" for r in cur.fetchall()]

        _remove(cur, self.table, name, users)


def _select(table: str, columns: str, users: bool = True) -> str:
    """SELECT `columns` and the stamps of `table` t (and the names of the profiles that use each row)."""
    profiles = f", ARRAY(SELECT p.name FROM profile p WHERE p.{table} = t.id ORDER BY p.name) AS profiles"
    return f"SELECT {columns}, {STAMPS}{profiles if users else ''} FROM {table} t"


# -- system templates ---------------------------------------------------------------------------------------------
def _system_values(cur: Cursor, t: SystemTemplate) -> dict[str, Any]:
    topo = t.topology
    return {
        **t.model_dump(exclude={"name", "topology"}),
        "sockets": topo.sockets if topo else None,
        "cores": topo.cores if topo else None,
        "threads": topo.threads if topo else None,
    }


def _system_row(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in ("id", "sockets", "cores", "threads", "created_at", "updated_at")}
    if row["sockets"] is not None:
        out["topology"] = {"sockets": row["sockets"], "cores": row["cores"], "threads": row["threads"]}
    return out


SYSTEM: Table[SystemTemplate] = Table(
    "system_template",
    SystemTemplate,
    SystemTemplateView,
    _select("system_template", "t.*"),
    _system_values,
    row=_system_row,
)


# -- network templates --------------------------------------------------------------------------------------------
def _put_nics(cur: Cursor, row_id: int, t: NetworkTemplate) -> None:
    cur.execute("DELETE FROM network_template_nic WHERE template = %s", (row_id,))
    for position, nic in enumerate(t.nics):
        cur.execute(
            "INSERT INTO network_template_nic (template, position, network, model) VALUES (%s, %s, %s, %s)",
            (row_id, position, nic.network, nic.model),
        )


NETWORK: Table[NetworkTemplate] = Table(
    "network_template",
    NetworkTemplate,
    NetworkTemplateView,
    _select(
        "network_template",
        """t.name, t.description, t.mac_template,
        coalesce((SELECT json_agg(json_build_object('network', n.network, 'model', n.model) ORDER BY n.position)
                  FROM network_template_nic n WHERE n.template = t.id), '[]') AS nics""",
    ),
    lambda cur, t: {"description": t.description, "mac_template": t.mac_template},
    _put_nics,
)


# -- storage templates --------------------------------------------------------------------------------------------
def _put_disks(cur: Cursor, row_id: int, t: StorageTemplate) -> None:
    cur.execute("DELETE FROM storage_template_disk WHERE template = %s", (row_id,))
    for position, disk in enumerate(t.disks):
        image = _id(cur, "image", disk.image, f"disks.{position}.image") if disk.image else None
        cur.execute(
            "INSERT INTO storage_template_disk (template, position, disk_id, pool, size_bytes, image, bus) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (row_id, position, disk.id, disk.pool, disk.size, image, disk.bus),
        )


STORAGE: Table[StorageTemplate] = Table(
    "storage_template",
    StorageTemplate,
    StorageTemplateView,
    _select(
        "storage_template",
        """t.name, t.description,
        coalesce((SELECT json_agg(json_build_object('id', d.disk_id, 'pool', d.pool, 'size', d.size_bytes,
                                                    'image', i.name, 'bus', d.bus) ORDER BY d.position)
                  FROM storage_template_disk d LEFT JOIN image i ON i.id = d.image WHERE d.template = t.id),
                 '[]') AS disks""",
    ),
    lambda cur, t: {"description": t.description},
    _put_disks,
)


# -- userdata -----------------------------------------------------------------------------------------------------
USERDATA: Table[Userdata] = Table(
    "userdata",
    Userdata,
    UserdataView,
    _select("userdata", "t.name, t.description, t.kind, octet_length(t.body) AS size"),
    lambda cur, u: {"description": u.description, "kind": classify(u.body), "body": u.body},
    summary=UserdataSummary,
    detail="t.body",
)


# -- profiles -----------------------------------------------------------------------------------------------------
REFERENCES = ("system_template", "network_template", "storage_template", "userdata", "ova")


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


PROFILE: Table[Profile] = Table(
    "profile",
    Profile,
    ProfileView,
    f"""SELECT t.name, t.description, t.kind, t.arguments, t.metadata, {STAMPS},
    s.name AS system_template, n.name AS network_template, g.name AS storage_template, u.name AS userdata,
    o.name AS ova
    FROM profile t JOIN system_template s ON s.id = t.system_template
    LEFT JOIN network_template n ON n.id = t.network_template LEFT JOIN storage_template g ON g.id = t.storage_template
    LEFT JOIN userdata u ON u.id = t.userdata LEFT JOIN ova o ON o.id = t.ova""",
    _profile_values,
    used_by_profiles=False,
)


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


# -- instances: what each created VM was made from ----------------------------------------------------------------
def add_instance(
    cur: Cursor,
    uuid: str,
    name: str,
    profile: str | None,
    arguments: dict[str, str],
    meta_data: dict[str, Any],
    user_data: str,
    network_config: str,
) -> None:
    """Record what `pvc vm create` made VM `uuid` from: its profile (None: from an image), the --arg values and the
    seed's documents as rendered."""
    cur.execute(
        "INSERT INTO instance (vm_uuid, vm_name, profile, arguments, user_data, meta_data, network_config)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s)",
        (uuid, name, profile, Json(arguments), user_data, Json(meta_data), network_config),
    )


# -- OVAs: the descriptor as uploaded and each disk's converted volume ---------------------------------------------
OVA_SELECT = """SELECT t.name, t.description, t.ovf, extract(epoch FROM t.created_at)::float8 AS created,
    coalesce((SELECT json_agg(json_build_object('id', d.disk_id, 'pool', d.pool, 'volume', d.volume,
                                                'format', d.source_format, 'size', d.capacity_bytes)
                              ORDER BY d.position)
              FROM ova_disk d WHERE d.ova = t.id), '[]') AS disks,
    ARRAY(SELECT p.name FROM profile p WHERE p.ova = t.id ORDER BY p.name) AS profiles
    FROM ova t"""


def list_ovas(cur: Cursor) -> list[dict[str, Any]]:
    """Every OVA's row: name, description, ovf (the descriptor's text), created, disks, profiles."""
    cur.execute(OVA_SELECT + " ORDER BY t.name")
    return [dict(r) for r in cur.fetchall()]


def get_ova(cur: Cursor, name: str) -> dict[str, Any]:
    cur.execute(OVA_SELECT + " WHERE t.name = %s", (name,))
    return _one(cur, name, "ova")


def add_ova(cur: Cursor, name: str, description: str, ovf: str, disks: list[dict[str, Any]]) -> None:
    """Record OVA `name`; `disks` in order, each {id, pool, volume, format, size}."""
    row_id = _insert(cur, "ova", {"name": name, "description": description, "ovf": ovf})
    for position, d in enumerate(disks):
        cur.execute(
            "INSERT INTO ova_disk (ova, position, disk_id, pool, volume, source_format, capacity_bytes) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (row_id, position, d["id"], d["pool"], d["volume"], d["format"], d["size"]),
        )


def remove_ova(cur: Cursor, name: str) -> None:
    def users(row_id: int) -> list[str]:
        cur.execute("SELECT name FROM profile WHERE ova = %s ORDER BY name", (row_id,))
        return [f"profile {r['name']}" for r in cur.fetchall()]

    _remove(cur, "ova", name, users)


def taken(cur: Cursor, table: str, name: str) -> bool:
    """Whether `table` has an object named `name`."""
    cur.execute(f"SELECT 1 FROM {table} WHERE name = %s", (name,))
    return cur.fetchone() is not None
