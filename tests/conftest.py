"""Shared fixtures: a throwaway PostgreSQL server for the whole session, a fresh database per test.

The server is the local development server itself: scripts/local-db.sh started in a private temp
state directory, so the tests run the pinned PostgreSQL (POSTGRES_VERSION, from package-lock.json)
and exercise the script's handling of root (PostgreSQL refuses to run as root) on every run.
pytest-postgresql then makes a template database and a fresh copy of it per test.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from pytest_postgresql import factories
from pytest_postgresql.executors import NoopExecutor
from pytest_postgresql.janitor import DatabaseJanitor

LOCAL_DB = Path(__file__).resolve().parents[1] / "scripts" / "local-db.sh"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def local_server(state: Path) -> Iterator[tuple[NoopExecutor, Path]]:
    """A server started by scripts/local-db.sh with its state in ``state`` (destroyed at the end),
    with a template database; yields it and its data directory (owned by the server's OS user)."""
    environment = {**os.environ, "LOCAL_PG_DIR": str(state), "LOCAL_PG_PORT": str(_free_port())}
    started = subprocess.run([str(LOCAL_DB), "start"], env=environment, capture_output=True, text=True, check=False)
    try:
        if started.returncode != 0:
            pytest.fail(f"scripts/local-db.sh start failed:\n{started.stdout}{started.stderr}", pytrace=False)
        recorded = state / "datadir"  # as root the data lives where the server's OS user can reach it
        data = Path(recorded.read_text().strip()) if recorded.is_file() else state / "data"
        server = NoopExecutor(
            host="127.0.0.1", port=(state / "port").read_text().strip(), user="postgres", options="", dbname="tests"
        )
        with DatabaseJanitor(
            user=server.user, host=server.host, port=server.port, dbname=server.template_dbname, as_template=True
        ):
            yield server, data
    finally:
        subprocess.run([str(LOCAL_DB), "destroy"], env=environment, capture_output=True, check=False)


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
