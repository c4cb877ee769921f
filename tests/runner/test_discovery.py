"""Finding, validating and naming migration files, without a database."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from database.migrator.discovery import MigrationFile, discover, next_migration_path
from database.migrator.errors import InvalidMigrationError
from database.migrator.orchestration import compute_status, load_migrations

GUIDE_MIGRATIONS = Path(__file__).resolve().parents[2] / "database" / "migrations"
STAMP = "20261125093000"


def make(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        path = directory / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return directory


def sql_files(*names: str) -> dict[str, str | bytes]:
    return {name: f"SELECT '{name}';\n" for name in names}


def rejection(directory: Path) -> str:
    """What reading the directory (names, then contents) rejects, before any database work."""
    with pytest.raises(InvalidMigrationError) as caught:
        load_migrations(directory)
    return str(caught.value)


# --- discovery -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["001_a.sql", "002_b.sql", "003_c.sql"], ["001_a", "002_b", "003_c"]),
        (["10_x.sql", "9_x.sql", "100_x.sql"], ["9_x", "10_x", "100_x"]),
        (["0002_b.sql", "1_a.sql", "03_c.sql"], ["1_a", "0002_b", "03_c"]),
        (["20261125093000_b.sql", "20261124120000_a.sql"], ["20261124120000_a", "20261125093000_b"]),
        (
            ["999_last_sequential.sql", "20261125093000_first_stamp.sql"],
            ["999_last_sequential", "20261125093000_first_stamp"],
        ),
        (["001_Mixed-Case.v2.sql", "002_a_b_c.sql"], ["001_Mixed-Case.v2", "002_a_b_c"]),
    ],
    ids=["sequential", "numeric-not-lexical", "zero-padding-mixed", "timestamps", "sequential-then-timestamp", "chars"],
)
def test_orders_by_number_and_uses_the_stem_as_version(tmp_path: Path, names: list[str], expected: list[str]) -> None:
    directory = make(tmp_path / "m", sql_files(*names))
    found = discover(directory)
    assert [m.version for m in found] == expected
    assert [m.number for m in found] == [int(v.split("_", 1)[0]) for v in expected]
    assert all(m.path == directory / f"{m.version}.sql" for m in found)


def test_the_guides_directory() -> None:
    found = discover(GUIDE_MIGRATIONS)
    assert found == [
        MigrationFile(1, "001_initial_schema", GUIDE_MIGRATIONS / "001_initial_schema.sql"),
        MigrationFile(2, "002_add_user_profile", GUIDE_MIGRATIONS / "002_add_user_profile.sql"),
        MigrationFile(3, "003_add_savings_groups", GUIDE_MIGRATIONS / "003_add_savings_groups.sql"),
    ]


def test_ignores_other_files_dotfiles_and_directories(tmp_path: Path) -> None:
    directory = make(
        tmp_path / "m",
        {
            "001_a.sql": "SELECT 1;",
            "README.md": "# notes",
            "notes.txt": "",
            ".hidden.sql": "",
            ".002_draft.sql": "not sql at all",
            ".#001_a.sql": "",
            "001_a.sql~": "",
            "001_a.sql.bak": "",
            ".DS_Store": b"\x00\xff",
        },
    )
    (directory / "archive").mkdir()
    (directory / "archive" / "000_old.sql").write_text("")
    assert [m.version for m in discover(directory)] == ["001_a"]


def test_empty_directory_has_no_migrations(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    assert discover(tmp_path / "m") == []


@pytest.mark.parametrize("missing", ["nowhere", "file.sql"])
def test_missing_directory_is_an_error(tmp_path: Path, missing: str) -> None:
    (tmp_path / "file.sql").write_text("SELECT 1;")
    with pytest.raises(InvalidMigrationError, match="migrations directory not found"):
        discover(tmp_path / missing)


@pytest.mark.parametrize(
    "name",
    [
        "add_users.sql",
        "003-add.sql",
        "003_.sql",
        "003_add users.sql",
        "003.sql",
        "_003_add.sql",
        "003__add.sql",
        "003_add.SQL",
        "v003_add.sql",
        "-3_add.sql",
        "003_add!.sql",
        "003_ádd.sql",
        "٣_arabic_digit.sql",
    ],
)
def test_malformed_names_are_rejected_naming_the_file(tmp_path: Path, name: str) -> None:
    directory = make(tmp_path / "m", {"001_ok.sql": "SELECT 1;", name: "SELECT 2;"})
    message = rejection(directory)
    assert f"{directory / name}: malformed migration name" in message
    assert "NNN_description.sql" in message
    assert "001_ok" not in message


def test_sql_named_directory_is_rejected(tmp_path: Path) -> None:
    directory = make(tmp_path / "m", {"001_ok.sql": "SELECT 1;"})
    (directory / "002_dir.sql").mkdir()
    assert f"{directory / '002_dir.sql'}: not a regular file" in rejection(directory)


@pytest.mark.parametrize(
    "names",
    [["002_a.sql", "2_b.sql"], ["0002_a.sql", "02_a.sql"], ["20261125093000_a.sql", "20261125093000_b.sql"]],
)
def test_duplicate_numbers_are_rejected_naming_both_files(tmp_path: Path, names: list[str]) -> None:
    directory = make(tmp_path / "m", sql_files("001_first.sql", *names))
    message = rejection(directory)
    assert "duplicate migration number" in message
    assert all(name in message for name in names)
    assert "001_first" not in message


@pytest.mark.parametrize(("older", "newer"), [("004_b.sql", "004_a.sql"), ("004_a.sql", "004_b.sql")])
def test_duplicate_number_names_the_newer_file_first_and_the_next_free_number(
    tmp_path: Path, older: str, newer: str
) -> None:
    directory = make(tmp_path / "m", sql_files("001_x.sql", "002_y.sql", "005_z.sql", older))
    os.utime(directory / older, (1_700_000_000, 1_700_000_000))
    (directory / newer).write_text("SELECT 1;")  # written now: the newer file
    message = rejection(directory)
    assert message.startswith(f"{directory / newer}: duplicate migration number 4 (also {older})")
    assert message.endswith(f"if {newer} is the new one, rename it to 006_{newer[4:]}")


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "contains no SQL statements"),
        ("\n  \n\t", "contains no SQL statements"),
        ("-- to be written\n", "contains no SQL statements"),
        ("/* a\n /* nested */ */\n-- and a line\n;\n", "contains no SQL statements"),
        (b"\xef\xbb\xbf-- bom and a comment\n", "contains no SQL statements"),
        (b"SELECT 1;\nSELECT '\xe9';\n", ":2: not valid UTF-8"),
        (b"\xff\xfeS\x00E\x00L\x00", ":1: not valid UTF-8"),
        ("-- header\n/* never closed\n", ":2: unterminated /* comment"),
    ],
    ids=[
        "empty",
        "whitespace",
        "comment-only",
        "comments-and-empty-statement",
        "bom-comment",
        "latin-1",
        "utf-16",
        "open-comment",
    ],
)
def test_unusable_contents_are_rejected_naming_the_file(tmp_path: Path, content: str | bytes, problem: str) -> None:
    directory = make(tmp_path / "m", {"001_ok.sql": "SELECT 1;", "002_bad.sql": content})
    path = directory / "002_bad.sql"
    message = rejection(directory)
    assert message.startswith(f"{path}{problem}" if problem.startswith(":") else f"{path}: {problem}")
    assert "\n" not in message


def test_every_problem_in_the_directory_is_reported_together(tmp_path: Path) -> None:
    directory = make(
        tmp_path / "m",
        {
            "001_ok.sql": "SELECT 1;",
            "002_a.sql": "SELECT 2;",
            "2_b.sql": "SELECT 2;",
            "003-dash.sql": "SELECT 3;",
            "004_empty.sql": "",
            "005_comment.sql": "-- nothing yet\n",
            "006_latin1.sql": b"SELECT '\xe9';",
            "007_ok.sql": "SELECT 7;",
            "README.md": "ignored",
        },
    )
    message = rejection(directory)
    lines = message.splitlines()
    assert len(lines) == 5
    for expected in (
        "duplicate migration number 2",
        f"{directory / '003-dash.sql'}: malformed",
        f"{directory / '004_empty.sql'}: contains no SQL",
        f"{directory / '005_comment.sql'}: contains no SQL",
        f"{directory / '006_latin1.sql'}:1: not valid UTF-8",
    ):
        assert sum(expected in line for line in lines) == 1, expected
    assert "001_ok" not in message and "007_ok" not in message and "README" not in message


def test_a_bom_is_fine(tmp_path: Path) -> None:
    directory = make(tmp_path / "m", {"001_bom.sql": b"\xef\xbb\xbfSELECT 1;\n"})
    assert [m.version for m in load_migrations(directory)] == ["001_bom"]


# --- before any database work: load_migrations and compute_status ---------------------------


def test_load_migrations_rejects_a_bad_directory_before_any_database_work(tmp_path: Path) -> None:
    directory = make(tmp_path / "m", {"001_ok.sql": "SELECT 1;", "002_todo.sql": "-- later\n", "003_x.sql": b"\x80"})
    with pytest.raises(InvalidMigrationError) as caught:
        load_migrations(directory)
    assert "002_todo.sql: contains no SQL statements" in str(caught.value)
    assert "003_x.sql:1: not valid UTF-8" in str(caught.value)


def test_guide_migrations_are_all_pending_on_an_empty_database() -> None:
    status = compute_status(load_migrations(GUIDE_MIGRATIONS), {})
    assert [(p.version, p.statements, p.in_transaction, p.out_of_order) for p in status.pending] == [
        ("001_initial_schema", 2, True, False),
        ("002_add_user_profile", 4, True, False),
        ("003_add_savings_groups", 3, True, False),
    ]
    assert status.applied == []
    assert status.drifted == status.missing == status.unverified == []


def test_crlf_copy_has_the_same_digests(tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    for source in GUIDE_MIGRATIONS.glob("*.sql"):
        (directory / source.name).write_bytes(source.read_bytes().replace(b"\n", b"\r\n"))
    original = load_migrations(GUIDE_MIGRATIONS)
    crlf = load_migrations(directory)
    assert [m.digest for m in crlf] == [m.digest for m in original]
    assert [m.parsed.checksum for m in crlf] == [m.parsed.checksum for m in original]


# --- next_migration_path ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        ([], "001_add_savings_goals.sql"),
        (["001_a.sql", "002_b.sql", "003_c.sql"], "004_add_savings_goals.sql"),
        (["0001_a.sql"], "0002_add_savings_goals.sql"),
        (["1_a.sql"], "002_add_savings_goals.sql"),
        (["9_a.sql", "10_b.sql"], "011_add_savings_goals.sql"),
        (["999_a.sql"], "1000_add_savings_goals.sql"),
        (["001_a.sql", "0007_b.sql"], "0008_add_savings_goals.sql"),
        (["12345678901_a.sql"], "12345678902_add_savings_goals.sql"),
        (["123456789012_a.sql"], f"{STAMP}_add_savings_goals.sql"),
        (["20261101000000_a.sql"], f"{STAMP}_add_savings_goals.sql"),
        (["001_a.sql", "20261101000000_b.sql"], f"{STAMP}_add_savings_goals.sql"),
    ],
    ids=[
        "empty",
        "after-003",
        "width-4-kept",
        "minimum-width-3",
        "numeric-max",
        "grows-past-width",
        "widest-wins",
        "11-digits-is-sequential",
        "12-digits-is-timestamp",
        "timestamps",
        "mixed",
    ],
)
def test_next_migration_path(tmp_path: Path, existing: list[str], expected: str) -> None:
    directory = make(tmp_path / "m", {**sql_files(*existing), "README.md": "# 99999999999999_not_counted"})
    path = next_migration_path(directory, "Add savings goals", STAMP)
    assert path == directory / expected
    assert not path.exists()
    path.write_text("SELECT 1;\n")
    assert discover(directory)[-1].path == path


@pytest.mark.parametrize(
    ("description", "slug"),
    [
        ("Add savings goals!", "add_savings_goals"),
        ("add_savings_goals", "add_savings_goals"),
        ("  --Fix: users' e-mails --  ", "fix_users_e_mails"),
        ("CamelCase2Go", "camelcase2go"),
        ("v2.1 / index", "v2_1_index"),
        ("Café crème", "cafe_creme"),
        ("Straße für Größen", "strasse_fur_grossen"),
        ("naïve résumé", "naive_resume"),
        ("1", "1"),
    ],
)
def test_description_is_slugged(tmp_path: Path, description: str, slug: str) -> None:
    directory = make(tmp_path / "m", sql_files("001_a.sql"))
    assert next_migration_path(directory, description, STAMP).name == f"002_{slug}.sql"


@pytest.mark.parametrize("description", ["", "   ", "!!!", "__", "«»"])
def test_description_without_letters_or_digits_is_an_error(tmp_path: Path, description: str) -> None:
    directory = make(tmp_path / "m", sql_files("001_a.sql"))
    with pytest.raises(InvalidMigrationError, match="has no letters or digits"):
        next_migration_path(directory, description, STAMP)


@pytest.mark.parametrize("description", ["用户表", "add 用户"])
def test_description_that_cannot_be_written_in_ascii_says_why(tmp_path: Path, description: str) -> None:
    directory = make(tmp_path / "m", sql_files("001_a.sql"))
    with pytest.raises(InvalidMigrationError, match="cannot be written in a file name") as refused:
        next_migration_path(directory, description, STAMP)
    assert "the version recorded in the database" in str(refused.value)


def test_next_after_the_unfinished_file_new_wrote(tmp_path: Path) -> None:
    directory = make(tmp_path / "m", {"001_a.sql": "SELECT 1;", "002_todo.sql": "-- 002_todo: not written yet\n"})
    assert next_migration_path(directory, "more", STAMP).name == "003_more.sql"


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"001_a.sql": "SELECT 1;", "oops.sql": "SELECT 2;"}, "malformed migration name"),
        ({"001_a.sql": "SELECT 1;", "1_b.sql": "SELECT 2;"}, "duplicate migration number 1"),
    ],
)
def test_next_migration_path_refuses_a_badly_named_directory(
    tmp_path: Path, files: dict[str, str | bytes], problem: str
) -> None:
    directory = make(tmp_path / "m", files)
    with pytest.raises(InvalidMigrationError, match=problem):
        next_migration_path(directory, "more", STAMP)
