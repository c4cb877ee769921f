"""scripts/local-db.sh: the project-local PostgreSQL, as root (server dropped to `postgres`)
and as a normal user, restartable, and what `--environment local` connects to."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacks.settings import POSTGRES_MAJOR_VERSION

from .helpers import PROJECT_ROOT, run_cli

LOCAL_DB = PROJECT_ROOT / "scripts" / "local-db.sh"
IS_ROOT = os.geteuid() == 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def state_dir() -> Iterator[Path]:
    # Outside pytest's private temp tree: the server's OS user must be able to reach it.
    directory = Path(tempfile.mkdtemp(prefix="local-db-test-"))
    directory.chmod(0o777)
    yield directory / "postgres"
    subprocess.run([str(LOCAL_DB), "stop"], env=_env(directory / "postgres"), capture_output=True, check=False)
    shutil.rmtree(directory, ignore_errors=True)


def _env(state: Path, port: int | None = None) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    environment["LOCAL_PG_DIR"] = str(state)
    if port is not None:
        environment["LOCAL_PG_PORT"] = str(port)
    return environment


def local_db(command: str, state: Path, *, port: int | None = None, as_user: str | None = None) -> str:
    argv = [str(LOCAL_DB), command]
    if as_user:
        argv = ["runuser", "-u", as_user, "--", "env", f"LOCAL_PG_DIR={state}", *argv]
    result = subprocess.run(argv, env=_env(state, port), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_local_database_lifecycle_and_migrations(state_dir: Path) -> None:
    port = free_port()
    started = local_db("start", state_dir, port=port)
    assert f"postgresql://postgres@127.0.0.1:{port}/testdriven_dev" in started
    assert local_db("start", state_dir).count("Creating") == 0  # idempotent

    applied = run_cli("--environment", "local", env={"LOCAL_PG_DIR": str(state_dir)})
    assert applied.returncode == 0, applied.stderr
    assert "🎉 All migrations applied successfully!" in applied.stdout
    found = re.search(r"successful \(PostgreSQL (\d+)\.", applied.stdout)
    assert found is not None
    mismatch_warned = f"differs from the deployed PostgreSQL {POSTGRES_MAJOR_VERSION}" in applied.stdout
    assert mismatch_warned == (int(found.group(1)) != POSTGRES_MAJOR_VERSION)

    assert "stopped" in local_db("stop", state_dir)
    down = run_cli("--status", "--environment", "local", "--connect-timeout", "1",
                   env={"LOCAL_PG_DIR": str(state_dir)})
    assert down.returncode == 3 and "could not connect" in down.stderr

    local_db("start", state_dir)  # data survives a restart
    status = run_cli("--status", "--environment", "local", env={"LOCAL_PG_DIR": str(state_dir)})
    assert status.returncode == 0 and "✅ No pending migrations" in status.stdout
    assert "  • 003_add_savings_groups (" in status.stdout

    assert "deleted" in local_db("destroy", state_dir)
    assert not state_dir.exists()


@pytest.mark.skipif(not IS_ROOT, reason="switching to another OS user needs root")
def test_local_database_as_a_normal_user(state_dir: Path) -> None:
    state_dir.parent.chmod(0o777)
    started = local_db("start", state_dir, as_user="postgres")
    assert "Local PostgreSQL running" in started
    assert "running" in local_db("status", state_dir, as_user="postgres")
    assert "stopped" in local_db("stop", state_dir, as_user="postgres")
