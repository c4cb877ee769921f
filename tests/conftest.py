"""Shared fixtures: a throwaway PostgreSQL server for the whole session, a fresh database per test.

The server is the local development server itself: scripts/local-db.sh started in a private temp
state directory, so the tests run the pinned PostgreSQL (POSTGRES_VERSION, from package-lock.json)
and exercise the script's handling of root (PostgreSQL refuses to run as root) on every run.
pytest-postgresql then makes a template database and a fresh copy of it per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

from database.cli.throwaway_db import throwaway_server


@contextmanager
def local_server(state: Path) -> Iterator[tuple[NoopExecutor, Path]]:
    """A server started by scripts/local-db.sh with its state in ``state`` (destroyed at the end),
    with a template database; yields it and its data directory (owned by the server's OS user)."""
    with throwaway_server(state) as started:
        server = NoopExecutor(host="127.0.0.1", port=started.port, user="postgres", options="", dbname="tests")
        with DatabaseJanitor(
            user=server.user, host=server.host, port=server.port, dbname=server.template_dbname, as_template=True
        ):
            yield server, started.data_dir


@pytest.fixture(scope="session")
def postgresql_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoopExecutor]:
    """The session's server (stopped and deleted at the end), with a template database."""
    with local_server(tmp_path_factory.mktemp("local-db") / "postgres") as (server, _data):
        yield server


postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def database_uri(postgresql) -> str:  # type: ignore[no-untyped-def]
    """URI of an empty database created for this test (dropped afterwards)."""
    info = postgresql.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
