"""Migrations commit without waiting for the disk; the run makes them durable before it ends.

The proof is a crash: the server is stopped in immediate mode (what a power cut leaves, as far as
PostgreSQL's own memory goes: WAL not yet written is gone) right after the runner returns. Its WAL
writer is slowed to 10 s so that nothing but the runner's final flush can have saved the commits.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import psycopg
import pytest

from database.cli.throwaway_db import LOCAL_DB
from database.migrator.errors import MigrationFailedError
from tests.conftest import local_server

from .helpers import apply_dir, write_migrations


def _crash(data: Path) -> None:
    """Immediate shutdown (SIGQUIT to the postmaster): no checkpoint, no WAL flush."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGQUIT)
    for _ in range(200):
        try:
            os.kill(postmaster, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    raise AssertionError("the postmaster did not stop after SIGQUIT")


@pytest.mark.parametrize("role_commits_off", [False, True], ids=["role-default", "role-commits-unflushed"])
@pytest.mark.parametrize("third", ["SELECT 3", "SELECT 1/0"], ids=["run-succeeds", "third-fails"])
def test_applied_migrations_survive_a_crash_right_after_the_run(
    tmp_path: Path, third: str, role_commits_off: bool
) -> None:
    """Also as a role whose own setting is synchronous_commit = off, which RESET would bring back."""
    state = tmp_path / "postgres"
    with local_server(state) as (server, data):
        admin = f"host={server.host} port={server.port} user={server.user} dbname=postgres"
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute("ALTER SYSTEM SET wal_writer_delay = '10s'")
            connection.execute("SELECT pg_reload_conf()")
            connection.execute("CREATE ROLE lazy LOGIN")
            if role_commits_off:
                connection.execute("ALTER ROLE lazy SET synchronous_commit = off")
            connection.execute("CREATE DATABASE crash_test OWNER lazy")
        time.sleep(1)  # the WAL writer takes the new delay at its next (200 ms) turn
        migrations = write_migrations(
            tmp_path / "migrations",
            {
                "001_table_1.sql": "CREATE TABLE t1 (id int PRIMARY KEY);\nINSERT INTO t1 VALUES (1);\n",
                "002_table_2.sql": "CREATE TABLE t2 (id int PRIMARY KEY);\nINSERT INTO t2 VALUES (2);\n",
                "003_third.sql": f"{third};\n",
            },
        )
        uri = f"postgresql://lazy@{server.host}:{server.port}/crash_test"

        failed = third.endswith("1/0")
        if failed:
            with pytest.raises(MigrationFailedError, match="003_third"):
                apply_dir(uri, migrations)
        else:
            apply_dir(uri, migrations)
        _crash(data)
        environment = {**os.environ, "LOCAL_PG_DIR": str(state), "LOCAL_PG_PORT": str(server.port)}
        restarted = subprocess.run([str(LOCAL_DB), "start"], env=environment, capture_output=True, text=True)
        assert restarted.returncode == 0, restarted.stdout + restarted.stderr

        with psycopg.connect(uri) as connection:
            recorded = connection.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()
            rows = connection.execute("SELECT (SELECT id FROM t1), (SELECT id FROM t2)").fetchone()
        expected = [("001_table_1",), ("002_table_2",)] + ([] if failed else [("003_third",)])
        assert recorded == expected
        assert rows == (1, 2)
