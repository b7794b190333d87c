"""The provisioner's database on the Patroni cluster (the formation step, on every coordinator after Patroni).

Connects to the leader as Patroni's superuser to make the `pvc` role and database (pvc.nodeos.provisioner.bootstrap,
idempotent, ordered by a lock when the coordinators run it at once), then as `pvc` applies the schema's migrations.
The API applies them too when it starts, so a newer image that brings a migration needs no formation to use it.
"""

from __future__ import annotations

from pvc.nodeos.formation.machinery import Context, wait_for
from pvc.nodeos.provisioner import bootstrap, db, migrate


def prepare(superuser: db.Dsn, app: db.Dsn, timeout: float = 300) -> str:
    """Role, database and schema, through the leader among `superuser`'s members; what was done, in a line."""

    def made() -> bootstrap.Made:
        conn = superuser.connect()
        try:
            return bootstrap.ensure(conn, app.password, app.user, app.dbname)
        finally:
            conn.close()

    # the leader may still be electing itself (a replica's Patroni is healthy before it knows the leader)
    done = wait_for(f"the PostgreSQL leader (of {superuser.where()}) to make the role and database", made, timeout, 2.0)

    def migrated() -> tuple[list[int], int]:
        conn = app.connect()
        try:
            applied = migrate.apply(conn)
            return applied, migrate.version(conn)
        finally:
            conn.close()

    applied, version = wait_for("the provisioner's schema migrations", migrated, min(timeout, 120), 2.0)
    created = [what for what, new in (("role", done.role), ("database", done.database)) if new]
    return (
        f"database {app.dbname}"
        + (f" ({' and '.join(created)} created)" if created else "")
        + f", schema version {version}"
        + (f" (applied {', '.join(map(str, applied))})" if applied else "")
    )


def step(ctx: Context) -> str:
    return prepare(db.superuser_dsn(ctx.cfg, ctx.join_key), db.app_dsn(ctx.cfg, ctx.join_key))
