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


@pytest.fixture(scope="session")
def postgresql_proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NoopExecutor]:
    """The session's server (stopped and deleted at the end), with a template database."""
    state = tmp_path_factory.mktemp("local-db") / "postgres"
    environment = {**os.environ, "LOCAL_PG_DIR": str(state), "LOCAL_PG_PORT": str(_free_port())}
    started = subprocess.run([str(LOCAL_DB), "start"], env=environment, capture_output=True, text=True, check=False)
    try:
        if started.returncode != 0:
            pytest.fail(f"scripts/local-db.sh start failed:\n{started.stdout}{started.stderr}", pytrace=False)
        server = NoopExecutor(
            host="127.0.0.1", port=(state / "port").read_text().strip(), user="postgres", options="", dbname="tests"
        )
        with DatabaseJanitor(
            user=server.user, host=server.host, port=server.port, dbname=server.template_dbname, as_template=True
        ):
            yield server
    finally:
        subprocess.run([str(LOCAL_DB), "destroy"], env=environment, capture_output=True, check=False)


postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def database_uri(postgresql) -> str:  # type: ignore[no-untyped-def]
    """URI of an empty database created for this test (dropped afterwards)."""
    info = postgresql.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
