"""The cloud core's fixtures (``cloud_core_harness``), and a real PostgreSQL server for the registry's tests: Debian's ``postgresql`` package, started once per
session in a temporary data directory, on a Unix socket in that directory and a free loopback port.

PostgreSQL refuses to run as root: as root, ``initdb`` and ``pg_ctl`` run as the ``postgres`` user
(which the Debian package creates), in a directory under ``/tmp`` owned by that user (pytest's own
temporary root is private to the user running the tests). The tests skip, saying so, only where the
server's binaries are not installed (``apt-get install -y postgresql``).
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
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from cloud_server.registry import Registry
from cloud_core_harness import cloud, core  # noqa: F401 (the cloud core's fixtures, for tests/cloud_server/test_core*.py)


@dataclass(frozen=True)
class PostgresServer:
    port: int
    socket_dir: Path
    user: str

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{dbname}"


def _bin_dir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them off PATH, in /usr/lib/postgresql/<major>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop_orphans(bin_dir: Path, run_as: str | None) -> None:
    """Stop the servers of test sessions that were killed before their teardown ran (a mutation-gate
    run kills a test process that overruns its time): each server's directory names the pid of the
    session that started it; a server whose session is gone is stopped and its directory removed."""
    for root in glob.glob(os.path.join(tempfile.gettempdir(), "ecd-pg-*")):
        try:
            owner = int((Path(root) / "owner.pid").read_text())
        except (OSError, ValueError):
            continue  # not ours, or still starting
        if psutil.pid_exists(owner):
            continue
        subprocess.run([str(bin_dir / "pg_ctl"), "stop", "-D", os.path.join(root, "data"), "-m", "immediate", "-w"],
                       user=run_as, capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    bin_dir = _bin_dir()
    if bin_dir is None or not (bin_dir / "initdb").exists():
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql): the PostgreSQL registry tests cannot run")
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no postgres user to run the PostgreSQL server as")
        run_as = "postgres"
    _stop_orphans(bin_dir, run_as)
    root = Path(tempfile.mkdtemp(prefix="ecd-pg-"))
    (root / "owner.pid").write_text(str(os.getpid()))
    if run_as:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, log = root / "data", root / "server.log"
    port = _free_port()

    def pg(tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir / tool), *args], user=run_as, cwd=root, capture_output=True, text=True, timeout=120)

    started = False
    try:
        done = pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
        assert done.returncode == 0, f"initdb failed:\n{done.stdout}\n{done.stderr}"
        options = f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={root} -c fsync=off"
        done = pg("pg_ctl", "start", "-D", str(data), "-l", str(log), "-w", "-t", "60", "-o", options)
        started = done.returncode == 0
        assert started, f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{log.read_text() if log.exists() else ''}"
        ready = pg("pg_isready", "-h", "127.0.0.1", "-p", str(port), "-t", "30")
        assert ready.returncode == 0, f"pg_isready: {ready.stdout}{ready.stderr}"
        yield PostgresServer(port, root, "postgres")
    finally:
        if started:
            pg("pg_ctl", "stop", "-D", str(data), "-m", "fast", "-w")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, for one test."""
    import psycopg

    name = f"ecd_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield postgres_server.url(name)
    with psycopg.connect(postgres_server.url(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The registry's database: a SQLite file, then a fresh PostgreSQL database (the same tests run on both)."""
    if request.param == "sqlite":
        return str(tmp_path / "registry.sqlite3")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def registry(db: str) -> Iterator[Registry]:
    r = Registry(db)
    yield r
    r.close()
