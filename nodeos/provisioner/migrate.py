"""The provisioner's schema: numbered SQL files, applied in order, once each, under a lock.

`migrations/NNNN_name.sql` (numbered from 0001 without gaps) are applied by `apply()` to the version table
`schema_migrations`, which records each applied file's number, name and SHA-256. All pending files run in one
transaction that first takes a transaction-level advisory lock, so two API workers (or two coordinators' formation)
starting at once apply them exactly once, and a file that fails leaves the database at the version it had. A
database whose schema is newer than this PVC knows, or whose applied file no longer matches this PVC's copy, is
refused (Unavailable) rather than used. docs/provisioner.md says why plain SQL files and how to add one.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable

import psycopg2
import psycopg2.extensions
import psycopg2.extras

from pvc.nodeos.provisioner.errors import Unavailable

LOCK_KEY = 0x5056_4350_524F_5631  # pg_advisory_xact_lock's key: "PVCPROV1"
FILE_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
VERSION_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version int PRIMARY KEY,
    name text NOT NULL,
    sha256 text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def product() -> Traversable:
    """This PVC's migration files (package data)."""
    return resources.files("pvc.nodeos.provisioner") / "migrations"


def load(folder: Traversable | None = None) -> list[Migration]:
    """The migrations in `folder` (default: this PVC's), in order; ValueError on a misnamed file or a gap."""
    found = []
    for entry in (folder or product()).iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = FILE_RE.match(entry.name)
        if not match:
            raise ValueError(f"migration file '{entry.name}' is not named NNNN_name.sql")
        found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    for expected, m in enumerate(found, 1):
        if m.version != expected:
            raise ValueError(f"migration {expected:04d} is missing (found {m.version:04d}_{m.name}.sql next)")
    return found


def latest(migrations: list[Migration] | None = None) -> int:
    return (migrations if migrations is not None else load())[-1].version


def version(conn: psycopg2.extensions.connection) -> int:
    """The database's schema version (0: none applied). Read-only; leaves no transaction open."""
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT to_regclass('schema_migrations') IS NOT NULL AS present")
            row = cur.fetchone()
            if not row or not row["present"]:
                return 0
            cur.execute("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")
            row = cur.fetchone()
            return int(row["v"]) if row else 0
    finally:
        conn.rollback()


def apply(conn: psycopg2.extensions.connection, migrations: list[Migration] | None = None) -> list[int]:
    """Bring the database to the latest version; the versions applied now (none when it was current)."""
    migrations = migrations if migrations is not None else load()
    known = {m.version: m for m in migrations}
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            cur.execute(VERSION_TABLE)
            cur.execute("SELECT version, name, sha256 FROM schema_migrations ORDER BY version")
            applied = [dict(r) for r in cur.fetchall()]
            for row in applied:
                m = known.get(row["version"])
                if m is None:
                    raise Unavailable(
                        f"the provisioner's database has schema version {applied[-1]['version']}, newer than this "
                        f"PVC knows ({latest(migrations)}): upgrade the API on this node"
                    )
                if row["sha256"] != m.sha256:
                    raise Unavailable(
                        f"migration {m.version:04d}_{m.name}.sql differs from the one applied to the database "
                        f"({row['name']}, sha256 {row['sha256'][:12]}…): a migration must never change once released"
                    )
            done = {row["version"] for row in applied}
            ran = []
            for m in migrations:
                if m.version in done:
                    continue
                try:
                    cur.execute(m.sql)
                except psycopg2.Error as exc:
                    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
                        raise
                    detail = exc.diag.message_primary or str(exc).strip().splitlines()[0]
                    raise Unavailable(f"migration {m.version:04d}_{m.name}.sql failed: {detail}") from None
                cur.execute(
                    "INSERT INTO schema_migrations (version, name, sha256) VALUES (%s, %s, %s)",
                    (m.version, m.name, m.sha256),
                )
                ran.append(m.version)
        conn.commit()
    except BaseException:
        if not conn.closed:
            conn.rollback()
        raise
    return ran
