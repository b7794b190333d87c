"""Connections to the provisioner's database on the Patroni leader, and transactions that survive a failover.

libpq is given every member (`host=a,b,c port=p,p,p target_session_attrs=read-write`): it tries them in turn, with
`connect_timeout` each, and keeps the first that accepts writes, which is the Patroni leader. A failover ends every
connection to the old leader; `Database.transaction` then connects again (to whichever member leads now) and runs
the transaction again, until `retry_for` seconds have passed. A write whose COMMIT was sent when the connection
broke may or may not have committed: the transaction notes its ID first, and asks the new leader
(`txid_status`) before running it again, so a committed write is never applied twice.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras

from pvc.config.schema import ClusterFile
from pvc.config.secrets import postgresql_password
from pvc.nodeos.provisioner.errors import Unavailable

APP_USER = "pvc"  # the role the API connects as; it owns DATABASE
DATABASE = "pvc"
SUPERUSER = "postgres"  # Patroni's superuser (nodeos/formation/patroni.py)
CONNECT_TIMEOUT = 3  # seconds per member
STATEMENT_TIMEOUT_MS = 30_000  # no statement of the provisioner's runs longer; a stuck one ends with an error
RETRY_INTERVAL = 0.5

Cursor = psycopg2.extras.RealDictCursor
T = TypeVar("T")

# The connection to the leader is gone, or this member no longer leads: connect again and run it again.
LOST: tuple[type[Exception], ...] = (
    psycopg2.OperationalError,
    psycopg2.InterfaceError,
    psycopg2.errors.ReadOnlySqlTransaction,
)


@dataclass(frozen=True)
class Dsn:
    """Where and as whom to connect: every member as (host, port), tried in order by libpq."""

    members: tuple[tuple[str, int], ...]
    user: str
    password: str
    dbname: str
    connect_timeout: int = CONNECT_TIMEOUT
    application_name: str = "pvc"

    def connect(self) -> psycopg2.extensions.connection:
        return psycopg2.connect(
            host=",".join(h for h, _ in self.members),
            port=",".join(str(p) for _, p in self.members),
            dbname=self.dbname,
            user=self.user,
            password=self.password,
            target_session_attrs="read-write",
            connect_timeout=self.connect_timeout,
            application_name=self.application_name,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
            keepalives=1,
            keepalives_idle=5,
            keepalives_interval=2,
            keepalives_count=3,
            cursor_factory=Cursor,
        )

    def where(self) -> str:
        return ", ".join(f"{h}:{p}" for h, p in self.members)


def parse_members(text: str, default_port: int = 5432) -> tuple[tuple[str, int], ...]:
    """`host[:port],host[:port],...` (an IPv6 address in brackets) as (host, port) pairs; ValueError if malformed."""
    members = []
    for item in (i.strip() for i in text.split(",")):
        if not item:
            raise ValueError(f"'{text}' has an empty member (expected host[:port],host[:port],...)")
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or str(default_port)
        elif item.count(":") == 1:
            host, port = item.split(":")
        else:
            host, port = item, str(default_port)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"'{item}' is not host[:port]")
        members.append((host, int(port)))
    return tuple(members)


def app_password(join_key: str) -> str:
    """The app role's password, derived from the join key (the API gets it from its start-up helper)."""
    return postgresql_password(join_key, "app")


def app_dsn(cfg: ClusterFile, join_key: str, members: str | None = None) -> Dsn:
    """The API's connection: the app role (its password derived from the join key) to the provisioner's database
    on every coordinator (or on `members`, host:port,...)."""
    return app_dsn_with(cfg, app_password(join_key), members)


def app_dsn_with(cfg: ClusterFile, password: str, members: str | None = None) -> Dsn:
    """`app_dsn` for a process that holds the app role's password but not the join key (the API)."""
    return Dsn(
        parse_members(members or cfg.postgres_hosts(), cfg.patroni.postgres_port),
        APP_USER,
        password,
        DATABASE,
        application_name="pvc-api",
    )


def superuser_dsn(cfg: ClusterFile, join_key: str, members: str | None = None) -> Dsn:
    """Patroni's superuser, to the maintenance database: what creates the app role and its database."""
    return Dsn(
        parse_members(members or cfg.postgres_hosts(), cfg.patroni.postgres_port),
        SUPERUSER,
        postgresql_password(join_key, "superuser"),
        "postgres",
        application_name="pvc-formation",
    )


class Database:
    """A few pooled connections to the leader; `transaction(fn)` runs `fn(cursor)` in one transaction, again after
    a failover. `prepare(connection)` runs once before the first transaction (the API applies the migrations)."""

    def __init__(
        self,
        dsn: Dsn,
        retry_for: float = 30.0,
        prepare: Callable[[psycopg2.extensions.connection], object] | None = None,
        pool_size: int = 4,
    ) -> None:
        self.dsn = dsn
        self.retry_for = retry_for
        self.pool_size = pool_size
        self._prepare = prepare
        self._prepared = False
        self._idle: list[psycopg2.extensions.connection] = []
        self._lock = threading.Lock()
        self.lost = 0  # connections lost in a transaction, each then retried or found committed (tests read it)

    def transaction(self, fn: Callable[[Cursor], T], write: bool = True) -> T:
        """`fn(cursor)`'s result, committed. Its own exceptions roll back and pass through; a lost connection is
        retried on the current leader until `retry_for` has passed, then Unavailable. `write=False` skips the
        commit-outcome bookkeeping (a read is safe to run twice)."""
        deadline = time.monotonic() + self.retry_for
        while True:
            conn: psycopg2.extensions.connection | None = None
            xid: int | None = None
            committing = False
            result: T
            try:
                conn = self._take()
                with conn.cursor(cursor_factory=Cursor) as cur:
                    if write:
                        cur.execute("SELECT txid_current() AS xid")
                        xid = _one(cur)["xid"]
                    result = fn(cur)
                committing = True
                conn.commit()
            except LOST as exc:
                self._drop(conn)
                if isinstance(exc, psycopg2.errors.QueryCanceled):  # the statement timeout: not a failover
                    raise Unavailable(
                        f"the provisioner's database did not answer in time: {_first_line(exc)}"
                    ) from None
                self.lost += 1
                if committing and xid is not None and self._committed(xid, deadline):
                    return result
                if time.monotonic() >= deadline:
                    raise Unavailable(
                        f"the provisioner's database ({self.dsn.where()}) has no reachable leader: {_first_line(exc)}"
                    ) from None
                time.sleep(RETRY_INTERVAL)
                continue
            except BaseException:
                if conn is not None:
                    self._rollback(conn)
                raise
            self._give(conn)
            return result

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    # -- connections -----------------------------------------------------------------------------------------
    def _take(self) -> psycopg2.extensions.connection:
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        if conn is None or conn.closed:
            conn = self.dsn.connect()
        if not self._prepared and self._prepare is not None:
            with self._lock:  # one thread prepares; the others wait for it
                if not self._prepared:
                    self._prepare(conn)
                    self._prepared = True
        return conn

    def _give(self, conn: psycopg2.extensions.connection) -> None:
        with self._lock:
            if len(self._idle) < self.pool_size and not conn.closed:
                self._idle.append(conn)
                return
        conn.close()

    def _drop(self, conn: psycopg2.extensions.connection | None) -> None:
        """Forget `conn` and every idle connection: after a failover they all lead to the old leader."""
        with self._lock:
            idle, self._idle = self._idle, []
        for c in [*idle, *([conn] if conn is not None else [])]:
            with contextlib.suppress(psycopg2.Error):
                c.close()

    def _rollback(self, conn: psycopg2.extensions.connection) -> None:
        try:
            conn.rollback()
        except psycopg2.Error:
            self._drop(conn)
            return
        self._give(conn)

    def _committed(self, xid: int, deadline: float) -> bool:
        """Whether transaction `xid`, whose COMMIT's answer was lost, committed: asked of the current leader."""
        while time.monotonic() < deadline:
            try:
                conn = self.dsn.connect()
            except LOST:
                time.sleep(RETRY_INTERVAL)
                continue
            try:
                with conn.cursor(cursor_factory=Cursor) as cur:
                    cur.execute("SELECT txid_status(%s) AS status", (xid,))
                    status = _one(cur)["status"]
            except psycopg2.Error:  # e.g. "transaction ID is in the future": the new leader never saw it
                return False
            finally:
                conn.close()
            if status != "in progress":
                return bool(status == "committed")
            time.sleep(RETRY_INTERVAL)
        return False


def _one(cur: Cursor) -> dict[str, Any]:
    row = cur.fetchone()
    assert row is not None
    return dict(row)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
