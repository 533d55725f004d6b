"""Opening the registry's database: a SQLite file or a postgresql URL, as one SQLAlchemy engine.

Everything that depends on which database it is lives here (the rest of the registry writes Core
expressions): how the URL is read, how a connection is made, and how a driver's error becomes one
line naming ``db`` with the password hidden. Both engines hide statement parameters in their
errors (``hide_parameters``): a failed write must not carry a device's token into a log.

psycopg 3 stays the PostgreSQL driver (``postgresql+psycopg``): the maintained adapter, with binary
wheels for every platform a cloud server runs on. Users keep passing the libpq URLs they pass today
(``postgresql://user@host:port/dbname``, ``?host=/socket/dir``, ``?password=``); psycopg parses
them, and the engine connects through psycopg with those parameters, so SQLAlchemy never has to
understand a libpq-only form. Both are imported only when a postgresql URL is given.
"""

from __future__ import annotations

import os
import re
import sqlite3
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.pool import StaticPool

from ecd.errors import ConfigError

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(db: str) -> bool:
    return db.startswith(POSTGRES_SCHEMES)


def redact(url: str) -> str:
    """The URL as it may be shown: a password (``user:pw@`` or ``?password=``) becomes ``***``."""
    url = re.sub(r"(://[^/?#@:]*):[^/?#@]*@", r"\1:***@", url)
    return re.sub(r"(?i)([?&]password=)[^&#]*", r"\1***", url)


def _one_line(error: BaseException, secret: str | None) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text.replace(secret, "***") if secret else text


def _private_file(path: str) -> None:
    """Create the SQLite file readable by its owner only (SQLite gives its -wal and -shm files the
    database file's mode); an existing file is left as its owner set it."""
    if path == ":memory:" or path.startswith("file:") or os.path.exists(path):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError:
        pass  # SQLite's own open names the problem (ConfigError in sqlite_engine)


def _postgres_params(url: str) -> dict[str, Any]:
    """The URL's connection parameters, checked: the driver is there and the URL parses."""
    try:
        import psycopg
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        raise ConfigError(
            f"db: {redact(url)} needs the PostgreSQL driver psycopg: pip install 'ecd-runtime[cloud]'"
        ) from None
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error as e:
        raise ConfigError(f"db: not a valid postgresql URL {redact(url)}: {_one_line(e, None)}") from None
    params.setdefault("connect_timeout", 10)  # an unreachable host fails in seconds, not minutes
    return params


def postgres_engine(params: dict[str, Any]) -> Engine:
    """One pooled connection, autocommit off: each registry call is one transaction. A connection
    the server dropped is discarded by the pool when its error arrives, so the call after reconnects."""
    import psycopg

    return create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(**params),
                         pool_size=1, max_overflow=0, hide_parameters=True)


def sqlite_engine(path: str) -> Engine:
    """One shared connection (StaticPool: ``:memory:`` must stay one database), in WAL mode; the
    registry's lock serializes its use across threads."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
        raise ConfigError(f"db: expected a SQLite file or a postgresql:// URL, got {redact(path)!r}")
    _private_file(path)
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(path, check_same_thread=False),
                           poolclass=StaticPool, hide_parameters=True)

    @event.listens_for(engine, "connect")
    def _wal(dbapi_connection, _record) -> None:  # a file's journal mode, set once per connection
        dbapi_connection.execute("PRAGMA journal_mode=WAL")

    return engine
