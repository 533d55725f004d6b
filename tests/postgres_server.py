"""A real PostgreSQL server for the registry's tests and for ``benchmarks/faults.py``: Debian's
``postgresql`` package, started in a temporary data directory, on a Unix socket in that directory
and a free loopback port; stopped and removed on exit.

PostgreSQL refuses to run as root: as root, ``initdb`` and ``pg_ctl`` run as the ``postgres`` user
(which the Debian package creates), in a directory under ``/tmp`` owned by that user (pytest's own
temporary root is private to the user running the tests). Plain module (no pytest), so that a
benchmark starts the same server the tests use.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil


@dataclass(frozen=True)
class PostgresServer:
    port: int
    socket_dir: Path
    user: str

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self) -> str:
        """A fresh, empty database on this server; its URL."""
        import psycopg

        name = f"ecd_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {url.rsplit('/', 1)[1]} WITH (FORCE)")


def bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them off PATH, in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    found = bin_dir()
    if found is None or not (found / "initdb").exists():
        return "PostgreSQL is not installed (apt-get install -y postgresql)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run the PostgreSQL server as"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_orphans(bins: Path, run_as: str | None) -> None:
    """Stop the servers of sessions that were killed before their teardown ran (a mutation-gate run
    kills a test process that overruns its time): each server's directory names the pid of the
    session that started it; a server whose session is gone is stopped and its directory removed."""
    for root in glob.glob(os.path.join(tempfile.gettempdir(), "ecd-pg-*")):
        try:
            owner = int((Path(root) / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or still starting
        if psutil.pid_exists(owner):
            continue
        subprocess.run([str(bins / "pg_ctl"), "stop", "-D", os.path.join(root, "data"), "-m", "immediate", "-w"],
                       user=run_as, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def running() -> Iterator[PostgresServer]:
    """A server for the duration of the block. Raises RuntimeError (with the server's own output) if
    it does not start; call :func:`unavailable` first to tell a missing package from a failure."""
    reason = unavailable()
    if reason:
        raise RuntimeError(reason)
    bins = bin_dir()
    assert bins is not None
    run_as = "postgres" if os.geteuid() == 0 else None
    _stop_orphans(bins, run_as)
    root = Path(tempfile.mkdtemp(prefix="ecd-pg-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    if run_as:
        owner = pwd.getpwnam(run_as)
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, log = root / "data", root / "server.log"
    port = _free_port()

    def pg(tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bins / tool), *args], user=run_as, cwd=root, capture_output=True, text=True, timeout=120)

    started = False
    try:
        done = pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off"
        done = pg("pg_ctl", "start", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options)
        started = done.returncode == 0
        if not started:
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{log.read_text() if log.exists() else ''}")
        ready = pg("pg_isready", "-h", "127.0.0.1", "-p", str(port), "-t", "30")
        if ready.returncode:
            raise RuntimeError(f"pg_isready: {ready.stdout}{ready.stderr}")
        yield PostgresServer(port, root, "postgres")
    finally:
        if started:
            pg("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w")
        shutil.rmtree(root, ignore_errors=True)
