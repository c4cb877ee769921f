"""scripts/check-migrations.sh against a real git history in a temporary repository."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from database.cli.check_migrations import check

from .conftest import ROOT

MIGRATIONS = "database/migrations"


def git(repo: Path, *arguments: str) -> str:
    environment = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    return subprocess.run(
        ["git", *arguments], cwd=repo, env=environment, check=True, capture_output=True, text=True
    ).stdout


def commit(repo: Path, files: dict[str, str | None], message: str) -> None:
    """Writes (or, for None, deletes) files under database/migrations and commits them."""
    for name, content in files.items():
        path = repo / MIGRATIONS / name
        if content is None:
            git(repo, "rm", "-q", f"{MIGRATIONS}/{name}")
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
            git(repo, "add", f"{MIGRATIONS}/{name}")
    git(repo, "commit", "-q", "-m", message)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """main with 001 and 002 applied; HEAD is a feature branch started from it."""
    git(tmp_path, "init", "-q", "-b", "main")
    commit(tmp_path, {"001_users.sql": "CREATE TABLE users (id int);\n"}, "001")
    commit(tmp_path, {"002_profile.sql": "ALTER TABLE users ADD bio text;\n"}, "002")
    git(tmp_path, "checkout", "-q", "-b", "feature")
    return tmp_path


def run_script(repo: Path) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY")}
    environment["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "database.cli.check_migrations", "--base", "main"],
        cwd=repo,
        env=environment,
        capture_output=True,
        text=True,
    )


def test_a_clean_addition_passes_and_is_listed(repo: Path) -> None:
    commit(repo, {"003_groups.sql": "CREATE TABLE groups (id int);\n"}, "003")
    result = check(repo, "main")
    assert result.problems == [] and result.warnings == []
    assert result.added == [f"{MIGRATIONS}/003_groups.sql"]
    completed = run_script(repo)
    assert completed.returncode == 0, completed.stderr
    assert f"1 new migration(s) against main: {MIGRATIONS}/003_groups.sql" in completed.stdout


def test_editing_an_applied_file_fails_naming_it(repo: Path) -> None:
    commit(repo, {"002_profile.sql": "ALTER TABLE users ADD bio varchar(200);\n"}, "edit 002")
    completed = run_script(repo)
    assert completed.returncode == 1
    assert f"check-migrations: {MIGRATIONS}/002_profile.sql: edited, but main already has it" in completed.stderr


def test_renaming_an_applied_file_fails_naming_both_names(repo: Path) -> None:
    git(repo, "mv", f"{MIGRATIONS}/002_profile.sql", f"{MIGRATIONS}/002_user_profile.sql")
    git(repo, "commit", "-q", "-m", "rename")
    [(path, message)] = check(repo, "main").problems
    assert path == f"{MIGRATIONS}/002_profile.sql"
    assert message.startswith(f"renamed to {MIGRATIONS}/002_user_profile.sql, but main already has it")
    assert run_script(repo).returncode == 1


def test_deleting_an_applied_file_fails(repo: Path) -> None:
    commit(repo, {"001_users.sql": None}, "delete 001")
    assert check(repo, "main").problems == [
        (f"{MIGRATIONS}/001_users.sql", "deleted, but main already has it (applied migrations stay)")
    ]


def test_two_branches_adding_the_same_number_fail(repo: Path) -> None:
    commit(repo, {"003_groups.sql": "CREATE TABLE groups (id int);\n"}, "feature adds 003")
    git(repo, "checkout", "-q", "main")
    commit(repo, {"003_phone.sql": "ALTER TABLE users ADD phone text;\n"}, "main adds 003 meanwhile")
    git(repo, "checkout", "-q", "feature")
    [(path, message)] = check(repo, "main").problems
    assert path == f"{MIGRATIONS}/003_groups.sql"
    assert message == f"number 3 is already used on main by {MIGRATIONS}/003_phone.sql: renumber this file"
    # The pull_request workflow checks the merge commit: the same conflict is found there.
    git(repo, "merge", "-q", "--no-edit", "main")
    assert [p for p, _ in check(repo, "main").problems] == [f"{MIGRATIONS}/003_groups.sql"]
    assert run_script(repo).returncode == 1


def test_work_on_the_branchs_own_new_file_is_allowed(repo: Path) -> None:
    commit(repo, {"003_groups.sql": "CREATE TABLE groups (id int);\n"}, "add 003")
    commit(repo, {"003_groups.sql": "CREATE TABLE groups (id bigint);\n"}, "fix 003 before merging")
    result = check(repo, "main")
    assert result.problems == [] and result.added == [f"{MIGRATIONS}/003_groups.sql"]


def test_a_number_below_the_targets_newest_is_a_warning(repo: Path) -> None:
    git(repo, "checkout", "-q", "main")
    commit(repo, {"005_later.sql": "SELECT 1;\n"}, "main adds 005")
    git(repo, "checkout", "-q", "feature")
    commit(repo, {"004_groups.sql": "SELECT 2;\n"}, "feature adds 004")
    result = check(repo, "main")
    assert result.problems == []
    assert [path for path, _ in result.warnings] == [f"{MIGRATIONS}/004_groups.sql"]


def test_an_unknown_base_is_a_one_line_error(repo: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    completed = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "database.cli.check_migrations", "--base", "origin/nope"],
        cwd=repo,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("check-migrations: git merge-base origin/nope HEAD:")
    assert completed.stderr.count("\n") == 1


def test_in_github_actions_problems_are_annotations_and_a_summary(repo: Path, tmp_path: Path) -> None:
    commit(repo, {"002_profile.sql": "ALTER TABLE users ADD bio varchar(10);\n", "003_x.sql": "SELECT 1;\n"}, "both")
    summary = tmp_path / "summary.md"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    completed = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "database.cli.check_migrations", "--base", "main"],
        cwd=repo,
        env=environment,
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 1
    assert f"::error file={MIGRATIONS}/002_profile.sql::edited" in completed.stdout
    text = summary.read_text()
    assert f"| `{MIGRATIONS}/002_profile.sql` | edited" in text
    assert f"| `{MIGRATIONS}/003_x.sql` |" in text


def test_files_outside_the_migrations_directory_itself_are_not_migrations(repo: Path) -> None:
    commit(repo, {"archive/001_users.sql": "-- old copy\n", "README.md": "notes\n"}, "not migrations")
    result = check(repo, "main")
    assert result.problems == [] and result.added == []


def run_module(repo: Path, *arguments: str, summary: Path | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY")}
    environment["PYTHONPATH"] = str(ROOT)
    if summary is not None:
        environment.update(GITHUB_ACTIONS="true", GITHUB_STEP_SUMMARY=str(summary))
    return subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "database.cli.check_migrations", *arguments],
        cwd=repo, env=environment, capture_output=True, text=True, timeout=300,
    )


def test_the_schema_snapshot_must_match_what_the_migrations_produce(repo: Path, tmp_path: Path) -> None:
    written = run_module(repo, "--write-schema-snapshot")
    assert written.returncode == 0, written.stderr
    snapshot = repo / "database" / "schema.sql"
    assert "CREATE TABLE public.users (\n    id integer,\n    bio text\n);" in snapshot.read_text()
    git(repo, "add", "database/schema.sql")
    git(repo, "commit", "-q", "-m", "snapshot")
    passed = run_module(repo, "--base", "main", "--schema-snapshot")
    assert passed.returncode == 0, passed.stderr
    assert "check-migrations: database/schema.sql matches what the migrations produce" in passed.stdout

    commit(repo, {"003_groups.sql": "CREATE TABLE groups (id int);\n"}, "003 without its snapshot")
    summary = tmp_path / "summary.md"
    stale = run_module(repo, "--base", "main", "--schema-snapshot", summary=summary)

    assert stale.returncode == 1
    assert "check-migrations: database/schema.sql: differs from the schema the migrations produce" in stale.stderr
    assert "+CREATE TABLE public.groups (" in stale.stderr
    assert "::error file=database/schema.sql::differs from" in stale.stdout
    assert "```diff\n--- database/schema.sql (committed)" in summary.read_text()


def test_a_migration_that_fails_on_an_empty_database_fails_the_snapshot_check(repo: Path) -> None:
    commit(repo, {"003_groups.sql": "CREATE TABLE groups (id int REFERENCES nowhere (id));\n"}, "broken 003")

    completed = run_module(repo, "--base", "main", "--schema-snapshot")

    assert completed.returncode == 1
    assert "database/schema.sql: the migrations do not apply to an empty PostgreSQL: " in completed.stderr
    assert f"{MIGRATIONS}/003_groups.sql:1: 003_groups failed: SQLSTATE 42P01" in completed.stderr


def test_the_base_is_required_unless_only_writing_the_snapshot(repo: Path) -> None:
    completed = run_module(repo, "--schema-snapshot")

    assert completed.returncode == 2 and "--base is required" in completed.stderr


def test_the_migrations_a_merge_adds_are_linted_with_annotations_on_their_lines(repo: Path, tmp_path: Path) -> None:
    commit(repo, {
        "003_index.sql": "-- by bio\nCREATE INDEX users_bio ON users (bio);\n",
        "004_seed.sql": "-- squawk-ignore insert-without-on-conflict\nINSERT INTO users (id) VALUES (1);\n",
    }, "lintable")  # fmt: skip
    summary = tmp_path / "summary.md"
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    completed = subprocess.run(
        [str(ROOT / ".venv/bin/python"), "-m", "database.cli.check_migrations", "--base", "main"],
        cwd=repo, env=environment, capture_output=True, text=True,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr  # warnings: the PR cannot know production's table sizes
    assert (
        f"::warning file={MIGRATIONS}/003_index.sql,line=2,title=require-concurrent-index-creation::"
        "CREATE INDEX on users blocks writes while it builds" in completed.stdout
    )
    assert "insert-without-on-conflict" not in completed.stdout  # acknowledged: in the summary, no annotation
    text = summary.read_text()
    assert f"| `{MIGRATIONS}/003_index.sql:2` | require-concurrent-index-creation | warning |" in text
    assert f"| `{MIGRATIONS}/004_seed.sql:2` | insert-without-on-conflict | warning (acknowledged) |" in text
    assert "001_users.sql:" not in text


def test_a_syntax_error_in_an_added_migration_fails_on_its_line(repo: Path) -> None:
    commit(repo, {"003_broken.sql": "SELECT 1;\nALTER TABLE users ADD COLUMN;\n"}, "broken")
    completed = run_script(repo)
    assert completed.returncode == 1
    assert f"check-migrations: {MIGRATIONS}/003_broken.sql:2: syntax-error: syntax error at or near" in completed.stderr


def test_an_undo_file_is_not_a_migration_and_may_be_added_or_edited(repo: Path) -> None:
    commit(repo, {"002_profile.down.sql": "ALTER TABLE users DROP COLUMN bio;\n"}, "undo for an applied migration")
    result = check(repo, "main", directory=MIGRATIONS)
    assert result.problems == [] and result.added == []


def test_a_repeatable_migration_may_be_added_and_edited(repo: Path) -> None:
    git(repo, "checkout", "-q", "main")
    commit(repo, {"R__names.sql": "CREATE OR REPLACE VIEW names AS SELECT 1 AS one;\n"}, "repeatable on main")
    git(repo, "checkout", "-q", "feature")
    git(repo, "merge", "-q", "main")
    commit(repo, {"R__names.sql": "CREATE OR REPLACE VIEW names AS SELECT 2 AS two;\n"}, "edited")
    result = check(repo, "main", directory=MIGRATIONS)
    assert result.problems == [] and result.added == []
