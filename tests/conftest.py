"""Shared fixtures: a throwaway PostgreSQL server for the whole session, a fresh database per test.

The server is started by pytest-postgresql through tests/support/pg_ctl, which drops root
privileges for the server (PostgreSQL refuses to run as root); pytest itself stays as it is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_postgresql import factories

PG_CTL = Path(__file__).parent / "support" / "pg_ctl"

postgresql_proc = factories.postgresql_proc(executable=str(PG_CTL), host="127.0.0.1", port=None)
postgresql = factories.postgresql("postgresql_proc")


@pytest.fixture
def database_uri(postgresql) -> str:  # type: ignore[no-untyped-def]
    """URI of an empty database created for this test (dropped afterwards)."""
    info = postgresql.info
    return f"postgresql://{info.user}@{info.host}:{info.port}/{info.dbname}"
