"""The cloud core's fixtures (``cloud_core_harness``), and a real PostgreSQL server for the
registry's tests (``tests/postgres_server.py``), started once per session. The tests skip, saying
so, only where the server's binaries are not installed (``apt-get install -y postgresql``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from cloud_server.registry import Registry
from postgres_server import PostgresServer, running, unavailable
from cloud_core_harness import cloud, core  # noqa: F401 (the cloud core's fixtures, for tests/cloud_server/test_core*.py)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    reason = unavailable()
    if reason:
        pytest.skip(f"{reason}: the PostgreSQL registry tests cannot run")
    with running() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server, for one test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


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
