"""PostgreSQL access shared by every service: a bounded connection pool, one transaction per unit
of work, error translation, and schema migrations applied under an advisory lock."""
from __future__ import annotations

import select
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg2
import psycopg2.errors
import psycopg2.extensions
import psycopg2.extras
import psycopg2.pool
from psycopg2.extensions import make_dsn, parse_dsn
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_before_delay, wait_exponential

from ..core.deadline import caller_gave_up
from ..core.errors import Unavailable
from ..observability.logs import get_logger

log = get_logger(__name__)

KIT_MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant shared by all replicas of a service works; this one spells "dlnk".
_MIGRATION_LOCK_KEY = 0x646C6E6B

# Errors that mean "the database is not reachable right now", as opposed to a bug in our SQL.
_CONNECTIVITY_ERRORS = (psycopg2.OperationalError, psycopg2.InterfaceError, psycopg2.pool.PoolError)


def build_dsn(url: str, password: str | None = None, **options: Any) -> str:
    params = parse_dsn(url)
    if password:
        params["password"] = password
    params.update({key: value for key, value in options.items() if value is not None})
    return make_dsn(**params)


def describe_dsn(dsn: str) -> str:
    """host:port/dbname for logs, never the password."""
    params = parse_dsn(dsn)
    return f"{params.get('host', 'localhost')}:{params.get('port', 5432)}/{params.get('dbname', '')}"


class ConnectionPool:
    """Up to `size` PostgreSQL connections, opened when first needed and handed out again while they work.

    Hand-rolled because psycopg2.pool.ThreadedConnectionPool, the library that fits psycopg2, cannot do
    what a service needs, whichever `minconn` it is given:

    - `getconn` opens a connection while holding the pool-wide lock, so one slow login stalls every thread;
    - with `minconn=0` `putconn` closes every connection it gets back (a new login per transaction), and
      with `minconn>0` the constructor connects at once, so a service could not start while PostgreSQL is down;
    - it never waits for a free connection (`PoolError` at once), rolls back under its lock, raises when a
      connection comes back after `closeall`, and hands out an idle connection whose server has gone.

    psycopg_pool solves these for psycopg 3, not psycopg2. What is kept from psycopg2.pool is its rule for a
    returned connection: rolled back if a transaction is still open, dropped if closed or in unknown state.
    The lock here guards only the list of idle connections; connecting, rolling back and closing happen
    outside it.
    """

    def __init__(self, dsn: str, size: int, *, acquire_timeout: float) -> None:
        self._dsn = dsn
        self._acquire_timeout = acquire_timeout
        # One slot per connection in use or being opened, so open connections (idle + in use) never exceed size.
        self._slots = threading.BoundedSemaphore(size)
        self._idle: list[psycopg2.extensions.connection] = []  # LIFO: the most recently used is reused first
        self._lock = threading.Lock()
        self._closed = False

    def getconn(self) -> psycopg2.extensions.connection:
        """A working connection, idle or new; Unavailable when none is free within `acquire_timeout`."""
        if not self._slots.acquire(timeout=self._acquire_timeout):
            raise Unavailable("database connection pool exhausted", retry_after=1)
        try:
            # The cursor factory is the connection's, not each cursor's: tracing's instrumentation wraps the
            # connection's factory, and a factory given to cursor() would bypass it.
            return self._reusable_idle_connection() or psycopg2.connect(
                self._dsn, cursor_factory=psycopg2.extras.RealDictCursor)
        except BaseException:
            self._slots.release()
            raise

    def putconn(self, conn: psycopg2.extensions.connection, *, broken: bool = False) -> None:
        """Take back a connection from `getconn`; `broken` when it saw a connectivity error (it is dropped)."""
        try:
            if broken or not _reset_for_reuse(conn):
                _close_quietly(conn)
                return
            with self._lock:
                if not self._closed:
                    self._idle.append(conn)
                    return
            _close_quietly(conn)  # the pool was closed while the connection was out
        finally:
            self._slots.release()

    @property
    def closed(self) -> bool:
        """True once `close` was called (named as on psycopg2's pools)."""
        return self._closed

    def close(self) -> None:
        """Close the idle connections now; those in use are closed when they come back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            _close_quietly(conn)

    def _reusable_idle_connection(self) -> psycopg2.extensions.connection | None:
        while True:
            with self._lock:
                if self._closed:
                    raise psycopg2.pool.PoolError("connection pool is closed")
                if not self._idle:
                    return None
                conn = self._idle.pop()
            if _still_connected(conn):
                return conn
            _close_quietly(conn)  # its server went away while it was idle (a restart, pg_terminate_backend)


def _still_connected(conn: psycopg2.extensions.connection) -> bool:
    """False for an idle connection the server has hung up on: it is closed, or its socket has something to
    read (the server's FATAL goodbye, or end of file). An idle session is sent nothing else, as the kit never
    LISTENs; checking costs no round trip."""
    if conn.closed or conn.info.transaction_status != psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return False
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLIN | select.POLLPRI)
    return not poller.poll(0)


def _reset_for_reuse(conn: psycopg2.extensions.connection) -> bool:
    """Roll back what the borrower left open; False when the connection cannot be reused."""
    if conn.closed:
        return False
    status = conn.info.transaction_status
    if status == psycopg2.extensions.TRANSACTION_STATUS_IDLE:
        return True
    if status == psycopg2.extensions.TRANSACTION_STATUS_UNKNOWN:  # the server connection was lost
        return False
    try:
        conn.rollback()
    except psycopg2.Error:
        return False
    return conn.info.transaction_status == psycopg2.extensions.TRANSACTION_STATUS_IDLE


def _close_quietly(conn: psycopg2.extensions.connection) -> None:
    try:
        conn.close()
    except psycopg2.Error:
        pass  # already unusable; dropping it is all that was wanted


class Database:
    """A thread-safe pool of warm connections whose callers wait (bounded) for a free one instead of failing."""

    def __init__(
        self,
        dsn: str,
        *,
        pool_size: int = 10,
        connect_timeout: float = 3.0,
        statement_timeout_ms: int = 5000,
        application_name: str = "delinkcious",
        acquire_timeout: float = 5.0,
    ) -> None:
        self._dsn = build_dsn(
            dsn,
            connect_timeout=max(1, int(connect_timeout)),
            application_name=application_name,
            options=f"-c statement_timeout={statement_timeout_ms}",
            keepalives=1,
            keepalives_idle=30,
        )
        # Opens nothing yet: a service starts (and reports not ready) while PostgreSQL is down.
        self._pool = ConnectionPool(self._dsn, pool_size, acquire_timeout=acquire_timeout)
        self.description = describe_dsn(self._dsn)

    @contextmanager
    def connection(self) -> Iterator[psycopg2.extensions.connection]:
        try:
            conn = self._pool.getconn()
        except _CONNECTIVITY_ERRORS as exc:
            raise Unavailable("database unavailable") from exc
        broken = False
        try:
            yield conn
        except _CONNECTIVITY_ERRORS as exc:
            broken = True
            raise Unavailable("database unavailable") from exc
        finally:
            # A connection that saw a connectivity error (e.g. after a server restart) is dropped, not reused.
            self._pool.putconn(conn, broken=broken)

    @contextmanager
    def transaction(self) -> Iterator[psycopg2.extensions.cursor]:
        """One transaction: commits when the block ends, rolls back on any exception."""
        with self.connection() as conn:
            try:
                with conn.cursor() as cursor:
                    yield cursor
                if caller_gave_up():  # it answered its own client already: a commit now would be a secret write
                    raise Unavailable("the caller stopped waiting before the commit: nothing was written")
                conn.commit()
            except BaseException:
                if not conn.closed:
                    conn.rollback()
                raise

    def ping(self) -> dict[str, Any]:
        with self.transaction() as cursor:
            cursor.execute("SELECT 1 AS ok")
            cursor.fetchone()
        return {"database": self.description}

    def close(self) -> None:
        self._pool.close()


def apply_migrations(
    dsn: str, migration_dirs: Sequence[Path], *, password: str | None = None, timeout: float = 60.0
) -> None:
    """Apply pending migrations (yoyo) while holding a session advisory lock.

    Several replicas starting together serialise here; the ones that come second find nothing to do.
    Waits up to `timeout` seconds for the database to accept connections first.
    """
    from yoyo import get_backend, read_migrations

    full_dsn = build_dsn(dsn, password)
    lock_conn = _connect_with_retry(full_dsn, timeout)
    try:
        lock_conn.autocommit = True
        with lock_conn.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK_KEY,))
        backend = get_backend(_yoyo_url(full_dsn))
        migrations = read_migrations(*(str(path) for path in migration_dirs))
        with backend.lock():
            pending = backend.to_apply(migrations)
            if pending:
                log.info("migrations_applying", migrations=[m.id for m in pending])
                backend.apply_migrations(pending)
        log.info("migrations_done", applied=len(pending), database=describe_dsn(full_dsn))
    finally:
        lock_conn.close()  # closing the session releases the advisory lock


def _connect_with_retry(dsn: str, timeout: float) -> psycopg2.extensions.connection:
    """A connection once the database accepts one; Unavailable when it has not within `timeout` seconds."""

    def log_retry(state: RetryCallState) -> None:
        log.warning("database_not_ready", database=describe_dsn(dsn), retry_in_s=round(state.upcoming_sleep, 2))

    retrying = Retrying(retry=retry_if_exception_type(psycopg2.OperationalError),
                        wait=wait_exponential(multiplier=0.1, min=0.2, max=5.0),
                        stop=stop_before_delay(timeout), before_sleep=log_retry, reraise=True)
    try:
        return retrying(psycopg2.connect, dsn, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        raise Unavailable(f"database {describe_dsn(dsn)} not reachable: {exc}".strip()) from exc


def _yoyo_url(dsn: str) -> str:
    """yoyo wants a URL; rebuild one from the libpq parameters (password percent-encoded)."""
    from urllib.parse import quote

    params = parse_dsn(dsn)
    user = quote(params.get("user", ""), safe="")
    password = params.get("password")
    auth = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    return f"postgresql://{auth}{host}:{port}/{params.get('dbname', '')}"
