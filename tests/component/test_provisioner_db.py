"""The provisioner's database on a real Patroni cluster (two PostgreSQL 15 members over ZooKeeper): the role and
database formation makes, the migration runner (from empty, from the previous version with data, concurrent, refused
when the database is newer or a released file changed, all-or-nothing on a failing file), and transactions that
complete across a Patroni switchover.
"""

from __future__ import annotations

import threading
import time
import uuid

import psycopg2
import pytest

from pvc.nodeos.formation.provisioner import prepare
from pvc.nodeos.provisioner import db, migrate
from pvc.nodeos.provisioner.errors import Unavailable
from tests.harness.cluster import JOIN_KEY
from tests.harness.procs import wait_until


def superuser(patroni) -> db.Dsn:
    return db.superuser_dsn(patroni.cfg, JOIN_KEY, patroni.members_string())


def app(patroni, dbname: str = db.DATABASE) -> db.Dsn:
    dsn = db.app_dsn(patroni.cfg, JOIN_KEY, patroni.members_string())
    return db.Dsn(dsn.members, dsn.user, dsn.password, dbname)


@pytest.fixture
def scratch(patroni):
    """A new, empty database owned by the app role (removed afterwards): its Dsn."""
    name = f"scratch_{uuid.uuid4().hex[:8]}"
    as_superuser(patroni, f"CREATE DATABASE {name} OWNER pvc")
    dsn = app(patroni, name)
    # libpq tries the members in order and stops at a server's refusal: until a replica listed before the leader
    # has replayed the CREATE DATABASE, it answers that the database does not exist
    wait_until(f"database {name} on every member", lambda: connects(dsn), 30, interval=0.2)
    try:
        yield dsn
    finally:
        as_superuser(patroni, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def connects(dsn: db.Dsn) -> bool:
    dsn.connect().close()
    return True


def as_superuser(patroni, sql: str) -> None:
    conn = superuser(patroni).connect()  # a new connection each time: the leader may have changed meanwhile
    conn.autocommit = True
    try:
        with conn.cursor(cursor_factory=db.Cursor) as cur:
            cur.execute(sql)
    finally:
        conn.close()


def tables(dsn: db.Dsn) -> set[str]:
    conn = dsn.connect()
    try:
        with conn.cursor(cursor_factory=db.Cursor) as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r["tablename"] for r in cur.fetchall()}
    finally:
        conn.close()


def write_set(folder, files: dict[str, str]):
    folder.mkdir(exist_ok=True)
    for name, text in files.items():
        (folder / name).write_text(text)
    return migrate.load(folder)


V1 = "CREATE TABLE disk (name text PRIMARY KEY, size_gb int NOT NULL);\n"
V2 = (
    "ALTER TABLE disk ADD COLUMN size_bytes bigint;\n"
    "UPDATE disk SET size_bytes = size_gb::bigint * 1024 * 1024 * 1024;\n"
    "ALTER TABLE disk ALTER COLUMN size_bytes SET NOT NULL, DROP COLUMN size_gb;\n"
)


def test_formation_makes_role_database_and_schema_once(patroni):
    assert patroni.prepared == "database pvc (role and database created), schema version 1 (applied 1)"
    again = prepare(superuser(patroni), app(patroni), 30)  # every boot runs it again: nothing changes
    assert again == "database pvc, schema version 1"
    # the app role logs in with its derived password and owns its database; no other role may connect
    conn = app(patroni).connect()
    with conn.cursor(cursor_factory=db.Cursor) as cur:
        cur.execute(
            "SELECT current_user AS u, pg_catalog.pg_get_userbyid(datdba) AS owner, datacl::text AS acl "
            "FROM pg_database WHERE datname = current_database()"
        )
        row = cur.fetchone()
    conn.close()
    assert (
        row is not None and row["u"] == "pvc" and row["owner"] == "pvc" and "=Tc/" not in row["acl"]
    )  # PUBLIC's default is gone
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        db.Dsn(app(patroni).members, "pvc", "not-the-derived-password", "pvc").connect()


def test_product_migrations_from_empty(scratch):
    conn = scratch.connect()
    assert migrate.version(conn) == 0
    assert migrate.apply(conn) == list(range(1, migrate.latest() + 1))
    assert migrate.version(conn) == migrate.latest() and migrate.apply(conn) == []
    conn.close()
    assert tables(scratch) >= {
        "schema_migrations", "image", "system_template", "network_template", "network_template_nic",
        "storage_template", "storage_template_disk", "userdata", "ova", "ova_disk", "profile", "instance",
    }  # fmt: skip


def test_previous_version_with_data_migrates_to_next(scratch, tmp_path):
    conn = scratch.connect()
    first = write_set(tmp_path / "v1", {"0001_disks.sql": V1})
    assert migrate.apply(conn, first) == [1]
    with conn.cursor(cursor_factory=db.Cursor) as cur:
        cur.execute("INSERT INTO disk VALUES ('root', 20), ('data', 100)")
    conn.commit()
    second = write_set(tmp_path / "v2", {"0001_disks.sql": V1, "0002_bytes.sql": V2})
    assert migrate.apply(conn, second) == [2] and migrate.version(conn) == 2
    with conn.cursor(cursor_factory=db.Cursor) as cur:
        cur.execute("SELECT name, size_bytes FROM disk ORDER BY name")
        assert [tuple(r.values()) for r in cur.fetchall()] == [("data", 100 * 1024**3), ("root", 20 * 1024**3)]
        cur.execute("SELECT version, name FROM schema_migrations ORDER BY version")
        assert [tuple(r.values()) for r in cur.fetchall()] == [(1, "disks"), (2, "bytes")]
    conn.rollback()
    # this PVC is older than the database: it refuses to use it rather than guess
    with pytest.raises(Unavailable, match="schema version 2, newer than this PVC knows \\(1\\)"):
        migrate.apply(conn, first)
    # a released file changed: refused, naming it
    edited = write_set(tmp_path / "v2e", {"0001_disks.sql": V1 + "-- edited\n", "0002_bytes.sql": V2})
    with pytest.raises(Unavailable, match=r"0001_disks\.sql differs from the one applied"):
        migrate.apply(conn, edited)
    conn.close()


def test_a_failing_migration_changes_nothing(scratch, tmp_path):
    conn = scratch.connect()
    migrate.apply(conn, write_set(tmp_path / "a", {"0001_disks.sql": V1}))
    broken = write_set(
        tmp_path / "b",
        {"0001_disks.sql": V1, "0002_ok.sql": "CREATE TABLE kept (x int);", "0003_bad.sql": "CREATE TABLE (;"},
    )
    with pytest.raises(Unavailable, match=r"migration 0003_bad\.sql failed: syntax error at or near"):
        migrate.apply(conn, broken)
    assert migrate.version(conn) == 1 and "kept" not in tables(scratch)  # 0002 rolled back with 0003
    conn.close()


def test_runner_refuses_gaps_and_bad_names(tmp_path):
    with pytest.raises(ValueError, match="migration 0002 is missing"):
        write_set(tmp_path / "gap", {"0001_a.sql": V1, "0003_c.sql": V1})
    with pytest.raises(ValueError, match=r"'1_a\.sql' is not named NNNN_name\.sql"):
        write_set(tmp_path / "name", {"1_a.sql": V1})


def test_concurrent_runners_apply_each_version_once(scratch, tmp_path):
    files = write_set(tmp_path / "c", {"0001_disks.sql": V1, "0002_bytes.sql": V2})
    results: list[list[int]] = []
    errors: list[BaseException] = []

    def run() -> None:
        conn = scratch.connect()
        try:
            results.append(migrate.apply(conn, files))
        except BaseException as exc:
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and sorted(results) == [[], [], [], [1, 2]]


def test_writes_complete_across_a_switchover(patroni, scratch):
    setup = scratch.connect()
    with setup.cursor() as cur:
        cur.execute("CREATE TABLE counter (n int PRIMARY KEY)")
    setup.commit()
    setup.close()
    database = db.Database(scratch, retry_for=60)
    written: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def writer() -> None:
        n = 0
        while not stop.is_set() or n < 40:
            n += 1

            def insert(cur, n=n):
                cur.execute("INSERT INTO counter VALUES (%s)", (n,))
                return n

            try:
                written.append(database.transaction(insert))
            except BaseException as exc:
                failures.append(exc)
                return

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        old, new = patroni.switchover()
        assert old != new
        # and once more, back: the writer keeps going through both
        patroni.switchover()
    finally:
        stop.set()
        thread.join(120)
    assert failures == [], failures
    assert database.lost > 0, "no write met the switchover: the test proved nothing"

    def counted(cur):
        cur.execute("SELECT count(*) AS c, max(n) AS m FROM counter")
        return cur.fetchone()

    count = database.transaction(counted, write=False)
    assert (count["c"], count["m"]) == (len(written), len(written)), "a write was lost or applied twice"
    database.close()


def test_a_lost_commit_is_looked_up_not_guessed(scratch):
    """After a COMMIT whose answer was lost, the transaction's ID tells whether it committed: a committed one is not
    run again (it would apply twice), a rolled-back one is."""
    database = db.Database(scratch, retry_for=10)
    conn = scratch.connect()
    committed = txid(conn)
    conn.commit()
    rolled_back = txid(conn)
    conn.rollback()
    conn.close()
    deadline = time.monotonic() + 10
    assert database._committed(committed, deadline) is True
    assert database._committed(rolled_back, deadline) is False
    assert database._committed(rolled_back + 10**6, deadline) is False  # never seen here ("in the future")


def txid(conn) -> int:
    with conn.cursor(cursor_factory=db.Cursor) as cur:
        cur.execute("SELECT txid_current() AS xid")
        row = cur.fetchone()
        assert row is not None
        return int(row["xid"])
