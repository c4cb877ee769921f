"""The command line never surprises: bad or empty flag values, missing targets, a stopped local
server and interruptions are reported in one line (or one JSON document), before anything is
touched."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest

from database.cli import __main__ as cli
from database.cli import environments

from .helpers import GUIDE_MIGRATIONS, RUN_MIGRATIONS, public_tables, run_cli, write_migrations
from .test_concurrency import wait_for_query


def one_json_document(stdout: str) -> dict[str, object]:
    document = json.loads(stdout)  # raises unless stdout is exactly one JSON document
    assert isinstance(document, dict)
    return document


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that counts as a database server: any connection attempt shows up in its backlog."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(0.2)
        yield server


def connection_attempted(server: socket.socket) -> bool:
    try:
        client, _ = server.accept()
    except TimeoutError:
        return False
    client.close()
    return True


@pytest.mark.parametrize("form", ["separate", "equals"])
def test_empty_new_is_a_usage_error_that_touches_nothing(database_uri: str, tmp_path: Path, form: str) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);"})
    arguments = ["--new", ""] if form == "separate" else ["--new="]

    result = run_cli(*arguments, "--migrations-dir", str(directory), env={"DATABASE_URL": database_uri})

    assert result.returncode == 2, result.stdout
    assert "argument --new: empty value" in result.stderr
    assert sorted(path.name for path in directory.iterdir()) == ["001_a.sql"]
    assert public_tables(database_uri) == []


@pytest.mark.parametrize(
    "flag",
    ["--environment", "--db-uri", "--new", "--migrations-dir", "--accept-drift", "--lock-wait", "--lock-timeout",
     "--statement-timeout", "--connect-timeout"],
)
def test_every_flag_refuses_an_empty_value(database_uri: str, flag: str) -> None:
    """The `--new ""` class of bug, flag by flag: an unset shell variable never changes the meaning."""
    result = run_cli(flag, "", env={"DATABASE_URL": database_uri})

    assert result.returncode == 2, (result.stdout, result.stderr)
    assert f"argument {flag}:" in result.stderr
    assert public_tables(database_uri) == []


def test_empty_db_uri_never_falls_back_to_database_url(database_uri: str) -> None:
    result = run_cli("--db-uri", "", env={"DATABASE_URL": database_uri})
    empty_url = run_cli("--status", env={"DATABASE_URL": ""})

    assert result.returncode == 2 and "argument --db-uri: empty value" in result.stderr
    assert public_tables(database_uri) == []
    assert empty_url.returncode == 2 and "DATABASE_URL is set but empty" in empty_url.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--db-uri", "not a uri"], '--db-uri is not a PostgreSQL URI or connection string: missing "="'),
        (["--db-uri", "postgresql://app:Hunter2pw@db.example:abc/app"], "--db-uri: port 'abc' is not a number"),
        (["--statement-timeout", "abc"], "argument --statement-timeout: 'abc' is not a PostgreSQL duration"),
        (["--lock-timeout", "5 parsecs"], "argument --lock-timeout: '5 parsecs' is not a PostgreSQL duration"),
        (["--statement-timeout", "30d"], "argument --statement-timeout: '30d': at most"),
        (["--lock-wait", "-5"], "argument --lock-wait: '-5': expected 0 or more seconds"),
        (["--lock-wait", "nan"], "argument --lock-wait: 'nan': expected 0 or more seconds"),
        (["--connect-timeout", "-1"], "argument --connect-timeout: '-1': expected 0 or more seconds"),
        (["--status", "--dry-run"], "not allowed with argument"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--new", "x", "--db-uri", "postgresql://u@h/d"], "--new only creates a file and touches no database"),
    ],
)
def test_bad_values_are_usage_errors_before_any_connection(
    listener: socket.socket, arguments: list[str], message: str
) -> None:
    port = listener.getsockname()[1]
    names_a_target = "--db-uri" in arguments or "--new" in arguments
    target = [] if names_a_target else ["--db-uri", f"postgresql://app@127.0.0.1:{port}/app"]

    human = run_cli(*arguments, *target)
    as_json = run_cli(*arguments, *target, "--json")

    assert human.returncode == 2 and human.stdout == ""
    assert human.stderr.startswith("❌ ") and message in human.stderr
    assert len(human.stderr.strip().splitlines()) == 1 and "Traceback" not in human.stderr
    document = one_json_document(as_json.stdout)
    assert as_json.returncode == 2 and document["ok"] is False
    assert isinstance(document["error"], dict) and message in document["error"]["message"]
    assert document["error"]["exit_code"] == 2 and as_json.stderr == ""
    assert not connection_attempted(listener)
    assert "Hunter2pw" not in human.stderr + as_json.stdout


def test_no_target_at_all_fails_at_once_saying_how_to_name_one() -> None:
    started = time.monotonic()
    result = run_cli("--status")
    as_json = run_cli("--status", "--json")

    assert time.monotonic() - started < 15
    assert result.returncode == 2
    assert result.stderr.startswith("❌ no database given: name one with --environment local")
    assert "--db-uri URI" in result.stderr and "DATABASE_URL" in result.stderr
    assert one_json_document(as_json.stdout)["ok"] is False and as_json.returncode == 2


def test_stopped_local_server_says_to_start_it(tmp_path: Path, listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there any more: a stopped server
    (tmp_path / "port").write_text(f"{port}\n")

    started = time.monotonic()
    result = run_cli("--status", "--environment", "local", env={"LOCAL_PG_DIR": str(tmp_path)})

    assert time.monotonic() - started < 10
    assert result.returncode == 3
    assert "project-local PostgreSQL is not running" in result.stderr
    assert "scripts/local-db.sh start" in result.stderr
    assert "retrying" not in result.stdout


def test_something_else_on_the_local_port_is_not_taken_for_the_local_server(
    tmp_path: Path, listener: socket.socket
) -> None:
    port = listener.getsockname()[1]  # accepts connections, never answers as PostgreSQL
    (tmp_path / "port").write_text(f"{port}\n")

    result = run_cli("--status", "--environment", "local", env={"LOCAL_PG_DIR": str(tmp_path)})

    assert result.returncode == 3
    assert f"127.0.0.1:{port} does not answer as the project-local PostgreSQL" in result.stderr
    assert "scripts/local-db.sh start" in result.stderr and "retrying" not in result.stdout


@pytest.mark.parametrize(
    ("conninfo", "variables", "seconds"),
    [
        ("postgresql://app@127.0.0.1:5432/app", {}, environments.LOCAL_CONNECT_TIMEOUT),
        ("postgresql://app@localhost/app", {}, environments.LOCAL_CONNECT_TIMEOUT),
        ("postgresql://app@[::1]:5432/app", {}, environments.LOCAL_CONNECT_TIMEOUT),
        ("postgresql:///app?host=/var/run/postgresql", {}, environments.LOCAL_CONNECT_TIMEOUT),
        ("dbname=app", {}, environments.LOCAL_CONNECT_TIMEOUT),  # libpq's default: a Unix socket
        ("", {"PGHOST": "/tmp", "PGDATABASE": "app"}, environments.LOCAL_CONNECT_TIMEOUT),
        ("host=db.example hostaddr=127.0.0.1 dbname=app", {}, environments.LOCAL_CONNECT_TIMEOUT),
        ("postgresql://app@db.example:5432/app", {}, environments.REMOTE_CONNECT_TIMEOUT),
        ("postgresql://app@127.0.0.1,db.example/app", {}, environments.REMOTE_CONNECT_TIMEOUT),
        ("", {"PGHOST": "10.0.3.7", "PGDATABASE": "app"}, environments.REMOTE_CONNECT_TIMEOUT),
    ],
)
def test_this_machine_gets_the_local_connect_timeout_and_other_hosts_the_remote_one(
    conninfo: str, variables: dict[str, str], seconds: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("PGHOST", "PGHOSTADDR", "PGDATABASE", "DATABASE_URL"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in variables.items():
        monkeypatch.setenv(variable, value)
    target = environments.resolve_target(None, conninfo) if conninfo else environments.resolve_target(None, None)
    assert target.connect_timeout_seconds == seconds


def test_a_wait_says_how_much_longer_and_connect_timeout_0_tries_once(listener: socket.socket) -> None:
    port = listener.getsockname()[1]
    listener.close()  # refused from now on
    uri = f"postgresql://app@127.0.0.1:{port}/app"

    waited = run_cli("--status", "--db-uri", uri, "--connect-timeout", "3")
    started = time.monotonic()
    once = run_cli("--status", "--db-uri", uri, "--connect-timeout", "0")

    assert time.monotonic() - started < 2
    waits = [line for line in waited.stdout.splitlines() if line.startswith("⏳")]
    assert waits and all("s more (--connect-timeout 0 stops at once)" in line for line in waits)
    assert "for up to 3s more" in waits[0]
    assert once.returncode == waited.returncode == 3
    assert "⏳" not in once.stdout and "could not connect after 1 attempt" in once.stderr


def slow_second_migration(directory: Path) -> Path:
    return write_migrations(directory, {
        "001_fast.sql": "CREATE TABLE fast (id int);\n",
        "002_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(30);\n",
        "003_after.sql": "CREATE TABLE after_slow (id int);\n",
    })


@pytest.mark.parametrize("as_json", [False, True], ids=["human", "json"])
def test_ctrl_c_during_a_migration_is_one_line_naming_what_was_rolled_back(
    database_uri: str, tmp_path: Path, as_json: bool
) -> None:
    directory = slow_second_migration(tmp_path / "m")
    runner = subprocess.Popen(
        [str(RUN_MIGRATIONS), "--db-uri", database_uri, "--migrations-dir", str(directory),
         *(["--json"] if as_json else [])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    wait_for_query(database_uri, "pg_sleep")
    started = time.monotonic()
    runner.send_signal(signal.SIGINT)
    stdout, stderr = runner.communicate(timeout=20)

    assert runner.returncode == 130
    assert time.monotonic() - started < 10
    if as_json:
        document = one_json_document(stdout)
        assert document["ok"] is False and isinstance(document["error"], dict)
        message = str(document["error"]["message"])
        assert stderr == ""
    else:
        assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr
        message = stderr
    assert "interrupted: 002_slow was rolled back; no later migration ran (001_fast applied before it stay applied)" \
        in message
    assert public_tables(database_uri) == ["fast", "schema_migrations", "schema_migrations_fingerprint"]
    with psycopg.connect(database_uri) as connection:
        assert connection.execute("SELECT version FROM schema_migrations").fetchall() == [("001_fast",)]


def test_status_and_dry_run_report_an_empty_new_file_as_a_problem(database_uri: str, tmp_path: Path) -> None:
    """The README's workflow: --new, then --status / --dry-run before the SQL is written."""
    directory = tmp_path / "m"
    directory.mkdir()
    for path in GUIDE_MIGRATIONS.iterdir():
        (directory / path.name).write_bytes(path.read_bytes())
    assert run_cli("--db-uri", database_uri, "--migrations-dir", str(directory)).returncode == 0
    assert run_cli("--new", "add savings goals", "--migrations-dir", str(directory)).returncode == 0

    status = run_cli("--status", "--db-uri", database_uri, "--migrations-dir", str(directory))
    dry_run = run_cli("--dry-run", "--db-uri", database_uri, "--migrations-dir", str(directory))
    as_json = run_cli("--status", "--json", "--db-uri", database_uri, "--migrations-dir", str(directory))

    problem = f"{directory / '004_add_savings_goals.sql'}: contains no SQL statements"
    assert status.returncode == 2 and status.stderr == ""
    assert "  • 003_add_savings_groups (20" in status.stdout  # the report is all there
    assert "❌ Unusable migration files (apply refuses to run until they are fixed):" in status.stdout
    assert "No pending migrations" not in status.stdout
    assert f"  • {problem}" in status.stdout
    assert dry_run.returncode == 2 and f"  • {problem}" in dry_run.stdout
    assert "🔍 Dry run: an apply would refuse to start until the unusable files above are fixed" in dry_run.stdout
    document = one_json_document(as_json.stdout)
    assert as_json.returncode == 2 and document["ok"] is False
    assert isinstance(document["problems"], list) and document["problems"][0].startswith(problem)
    assert len(document["applied"]) == 3  # type: ignore[arg-type]



def test_a_password_literal_is_an_unusable_file_that_apply_refuses(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_tables.sql": "CREATE TABLE accounts (id int);\n",
        "002_app_role.sql": "-- the application's role\nCREATE ROLE app LOGIN\n    PASSWORD 'hunter2';\n",
    })

    status = run_cli("--status", "--db-uri", database_uri, "--migrations-dir", str(directory))
    applied = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory))

    problem = f"{directory / '002_app_role.sql'}:3: a password literal (PASSWORD '...')"
    assert status.returncode == 2 and f"  • {problem}" in status.stdout
    assert applied.returncode == 2 and problem in applied.stderr
    assert "hunter2" not in status.stdout + applied.stdout + applied.stderr
    assert public_tables(database_uri) == []  # refused before anything ran, the tracking table included

def test_new_keeps_accented_letters_readable(tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;"})
    result = run_cli("--new", "Café crème", "--migrations-dir", str(directory))
    refused = run_cli("--new", "用户", "--migrations-dir", str(directory))

    assert result.returncode == 0 and (directory / "002_cafe_creme.sql").is_file()
    assert refused.returncode == 2 and "ASCII letters and digits only" in refused.stderr


def test_user_equal_to_password_is_not_scrubbed_from_the_servers_message(database_uri: str) -> None:
    parts = urlsplit(database_uri)
    uri = f"postgresql://webapp:webapp@{parts.hostname}:{parts.port}/{parts.path.lstrip('/')}"

    result = run_cli("--status", "--db-uri", uri, "--connect-timeout", "5")

    assert result.returncode == 3
    assert 'role "webapp" does not exist' in result.stderr, result.stderr
    assert "postgresql://webapp:***@" in result.stdout


def test_paths_inside_the_project_are_shown_relative_to_it(
    database_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = write_migrations(tmp_path / "database" / "migrations", {"001_typo.sql": "SELECT 1;\nCREAT TABLE x;\n"})
    monkeypatch.setattr(environments, "PROJECT_ROOT", tmp_path)

    code = cli.main(["--db-uri", database_uri, "--migrations-dir", str(directory)])

    assert code == 1
    assert capsys.readouterr().err.startswith("❌ database/migrations/001_typo.sql:2: 001_typo failed: SQLSTATE 42601")


def test_version_warning_once_and_in_json(
    database_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import database.postgres_version

    with psycopg.connect(database_uri) as connection:
        server_major = connection.info.server_version // 10000
    monkeypatch.setattr(database.postgres_version, "POSTGRES_MAJOR_VERSION", server_major + 1)
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);"})

    assert cli.main(["--db-uri", database_uri, "--migrations-dir", str(directory)]) == 0
    human = capsys.readouterr().out
    assert cli.main(["--status", "--json", "--db-uri", database_uri, "--migrations-dir", str(directory)]) == 0
    document = one_json_document(capsys.readouterr().out)

    assert human.count(f"differs from the deployed PostgreSQL {server_major + 1}") == 1
    assert document["warnings"] == [
        f"PostgreSQL {server_major} here differs from the deployed PostgreSQL {server_major + 1} "
        "(POSTGRES_VERSION in database/postgres_version.py): features of either may not exist in the other"
    ]
    assert str(document["server_version"]).startswith(f"{server_major}.")


def test_raise_notice_and_warning_are_shown_and_kept_in_json(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {
        "001_talk.sql": "DO $$ BEGIN RAISE NOTICE 'backfilled % rows', 3; RAISE WARNING 'slow on big tables'; END $$;\n"
                        "CREATE TABLE IF NOT EXISTS talk (id int);\n",
        "002_again.sql": "CREATE TABLE IF NOT EXISTS talk (id int);\n",
    })
    human = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory), "--status")
    assert human.returncode == 0
    applied = run_cli("--db-uri", database_uri, "--migrations-dir", str(directory))
    assert applied.returncode == 0, applied.stderr
    talk = "📝 Applying: 001_talk\n   💬 NOTICE: backfilled 3 rows\n   💬 WARNING: slow on big tables\n"
    assert talk in applied.stdout
    assert '💬 NOTICE: relation "talk" already exists, skipping' in applied.stdout

    with psycopg.connect(database_uri, autocommit=True) as connection:
        connection.execute("DROP TABLE talk, schema_migrations")
    document = one_json_document(run_cli("--json", "--db-uri", database_uri, "--migrations-dir", str(directory)).stdout)
    assert document["server_messages"] == [
        {"version": "001_talk", "severity": "NOTICE", "message": "backfilled 3 rows"},
        {"version": "001_talk", "severity": "WARNING", "message": "slow on big tables"},
        {"version": "002_again", "severity": "NOTICE", "message": 'relation "talk" already exists, skipping'},
    ]


def test_kill_9_frees_the_lock_within_seconds(database_uri: str, tmp_path: Path) -> None:
    """The server notices the vanished client (client_connection_check_interval) mid-statement
    instead of running it to statement_timeout while holding the runner lock."""
    from database.migrator.postgres import ADVISORY_LOCK_KEY

    directory = write_migrations(tmp_path / "m", {"001_long.sql": "SELECT pg_sleep(60);\n"})
    victim = subprocess.Popen(
        [str(RUN_MIGRATIONS), "--db-uri", database_uri, "--migrations-dir", str(directory)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for_query(database_uri, "pg_sleep")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(timeout=10)
    killed_at = time.monotonic()

    with psycopg.connect(database_uri, autocommit=True) as connection:
        while not connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()[0]:  # type: ignore[index]
            assert time.monotonic() - killed_at < 5, "the killed runner's session still holds the lock"
            time.sleep(0.1)
        leftover = connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'database-migrator'"
        ).fetchone()
    assert leftover == (0,)


def test_an_unexpected_error_under_json_is_still_one_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from database.migrator import orchestration

    def broken(*_arguments: object) -> None:
        raise RuntimeError("cannot reach postgresql://app:Hunter2pw@db.example/app")

    monkeypatch.setattr(orchestration, "read_status", broken)
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;"})

    code = cli.main(["--status", "--json", "--db-uri", "postgresql://app@db.example/app", "--migrations-dir",
                     str(directory)])

    captured = capsys.readouterr()
    document = one_json_document(captured.out)
    assert code == 1 and document["ok"] is False and isinstance(document["error"], dict)
    assert document["error"]["message"] == (
        "internal error: RuntimeError: cannot reach postgresql://app:***@db.example/app"
    )
    assert "Traceback" in captured.err and "Hunter2pw" not in captured.out + captured.err
