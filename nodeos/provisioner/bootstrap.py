"""The provisioner's role and database on the Patroni cluster, made (or set right) with Patroni's superuser.

Idempotent, and safe when every coordinator runs it at once (a session advisory lock orders them): the role `pvc`
gets the app password derived from the join key (set again each time, so it always matches), and owns the database
`pvc`, which no other role may connect to. Formation runs it on the coordinators once PostgreSQL is up, then applies
the migrations as `pvc`.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg2.extensions
from psycopg2 import sql

from pvc.nodeos.provisioner.db import APP_USER, DATABASE

LOCK_KEY = 0x5056_4350_524F_5630  # pg_advisory_lock's key: "PVCPROV0"


@dataclass(frozen=True)
class Made:
    role: bool  # created now (else: its password set again)
    database: bool


def ensure(conn: psycopg2.extensions.connection, password: str, user: str = APP_USER, dbname: str = DATABASE) -> Made:
    """Make role `user` (login, `password`) and database `dbname` owned by it, on the superuser connection `conn`
    (to the leader). CREATE DATABASE cannot run in a transaction, so this runs in autocommit."""
    conn.autocommit = True
    role, database = sql.Identifier(user), sql.Identifier(dbname)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        try:
            cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,))
            new_role = cur.fetchone() is None
            verb = "CREATE" if new_role else "ALTER"
            cur.execute(
                sql.SQL(verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s").format(role),
                (password,),
            )
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            new_db = cur.fetchone() is None
            if new_db:
                cur.execute(sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8'").format(database, role))
            else:
                cur.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(database, role))
            cur.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
        finally:
            cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
    return Made(new_role, new_db)
