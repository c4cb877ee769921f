"""The lint corpus: for every rule we configure or add, a file that violates it and one that does
not, linted by the real squawk and pglast (no database: file-only severity)."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from database.lint.engine import INSERT_RULE, SQUAWK_CONFIG, lint_migrations
from database.lint.findings import ALWAYS_ERRORS, LOCKING_RULES, REQUIRED_FIELD_RULE, FileLint
from database.lint.severity import judge
from database.migrator.errors import InvalidMigrationError
from database.migrator.orchestration import load_migrations

NO_TRANSACTION = "-- migrate:no-transaction\n"
SETUP = "CREATE TABLE IF NOT EXISTS orders (id bigint PRIMARY KEY, x bigint, note text);\n"

# rule: (violating SQL, clean SQL). Each is the body of 002_*.sql after 001 creates `orders`.
CORPUS: dict[str, tuple[str, str]] = {
    "require-concurrent-index-creation": (
        "CREATE INDEX IF NOT EXISTS orders_x ON orders (x);\n",
        NO_TRANSACTION + "CREATE INDEX CONCURRENTLY IF NOT EXISTS orders_x ON orders (x);\n",
    ),
    "require-concurrent-index-deletion": (
        "DROP INDEX IF EXISTS orders_x;\n",
        NO_TRANSACTION + "DROP INDEX CONCURRENTLY IF EXISTS orders_x;\n",
    ),
    "require-concurrent-reindex": (
        "REINDEX TABLE orders;\n",
        NO_TRANSACTION + "REINDEX TABLE CONCURRENTLY orders;\n",
    ),
    "changing-column-type": (
        "ALTER TABLE orders ALTER COLUMN note TYPE varchar(20);\n",
        "ALTER TABLE orders ADD COLUMN IF NOT EXISTS note_short text;\n",
    ),
    "adding-field-with-default": (
        "ALTER TABLE orders ADD COLUMN IF NOT EXISTS token uuid DEFAULT gen_random_uuid();\n",
        "ALTER TABLE orders ADD COLUMN IF NOT EXISTS token uuid;\n",
    ),
    "adding-serial-primary-key-field": (
        "ALTER TABLE orders DROP CONSTRAINT orders_pkey;\nALTER TABLE orders ADD PRIMARY KEY (id);\n",
        "ALTER TABLE orders ADD COLUMN IF NOT EXISTS rank bigint;\n",
    ),
    "constraint-missing-not-valid": (
        "ALTER TABLE orders ADD CONSTRAINT orders_x_positive CHECK (x > 0);\n",
        "ALTER TABLE orders ADD CONSTRAINT orders_x_positive CHECK (x > 0) NOT VALID;\n",
    ),
    "adding-foreign-key-constraint": (
        "ALTER TABLE orders ADD CONSTRAINT orders_parent FOREIGN KEY (x) REFERENCES orders (id);\n",
        "ALTER TABLE orders ADD CONSTRAINT orders_parent FOREIGN KEY (x) REFERENCES orders (id) NOT VALID;\n",
    ),
    "adding-not-nullable-field": (
        "ALTER TABLE orders ALTER COLUMN x SET NOT NULL;\n",
        "ALTER TABLE orders ADD CONSTRAINT orders_x_not_null CHECK (x IS NOT NULL) NOT VALID;\n",
    ),
    "disallowed-unique-constraint": (
        "ALTER TABLE orders ADD CONSTRAINT orders_x_unique UNIQUE (x);\n",
        "ALTER TABLE orders ADD CONSTRAINT orders_x_unique UNIQUE USING INDEX orders_x_unique_index;\n",
    ),
    REQUIRED_FIELD_RULE: (
        "ALTER TABLE orders ADD COLUMN IF NOT EXISTS region text NOT NULL;\n",
        "ALTER TABLE orders ADD COLUMN IF NOT EXISTS region text NOT NULL DEFAULT 'eu';\n",
    ),
    "syntax-error": (
        "ALTER TABLE orders ADD COLUMN IF NOT EXISTS;\n",
        "ALTER TABLE orders ADD COLUMN IF NOT EXISTS region text;\n",
    ),
    INSERT_RULE: (
        "INSERT INTO orders (id, x) VALUES (1, 2);\n",
        "INSERT INTO orders (id, x) VALUES (1, 2) ON CONFLICT DO NOTHING;\n",
    ),
}


def lint_body(tmp_path: Path, body: str) -> FileLint:
    directory = tmp_path / "migrations"
    directory.mkdir(exist_ok=True)
    (directory / "001_orders.sql").write_text(SETUP, encoding="utf-8")
    (directory / "002_change.sql").write_text(body, encoding="utf-8")
    return lint_migrations(load_migrations(directory), lambda path: path.name)[1]


def rules_of(lint: FileLint) -> set[str]:
    return {finding.rule for finding in lint.findings}


def test_the_corpus_covers_every_rule_we_judge() -> None:
    assert set(CORPUS) == {*LOCKING_RULES, REQUIRED_FIELD_RULE, *ALWAYS_ERRORS, INSERT_RULE}


@pytest.mark.parametrize("rule", sorted(CORPUS))
def test_violating_file_is_found_and_clean_file_is_not(tmp_path: Path, rule: str) -> None:
    violating, clean = CORPUS[rule]
    assert rule in rules_of(lint_body(tmp_path, violating))
    assert rule not in rules_of(lint_body(tmp_path, clean))


@pytest.mark.parametrize("rule", sorted(CORPUS))
def test_file_only_severity_is_an_error_only_for_what_fails_whatever_the_data(tmp_path: Path, rule: str) -> None:
    findings = [f for f in judge([lint_body(tmp_path, CORPUS[rule][0])], None, 100_000) if f.rule == rule]
    assert findings
    assert {f.severity for f in findings} == {"error" if rule in ALWAYS_ERRORS else "warning"}


def test_the_rules_turned_off_are_the_ones_the_runner_covers_each_with_its_reason() -> None:
    text = SQUAWK_CONFIG.read_text(encoding="utf-8")
    config = tomllib.loads(text)
    assert "pg_version" not in config and "assume_in_transaction" not in config  # decided per run
    for rule in config["excluded_rules"]:
        before = text[: text.index(f'"{rule}"')].rstrip().splitlines()
        assert before[-1].lstrip().startswith("#"), f"{rule} is turned off without a reason above it"


def test_turned_off_rules_stay_quiet(tmp_path: Path) -> None:
    lint = lint_body(tmp_path, "ALTER TABLE orders ADD COLUMN IF NOT EXISTS label varchar(40);\n")
    assert not rules_of(lint) & {"require-lock-timeout", "require-statement-timeout", "prefer-text-field"}


def test_a_finding_names_its_line_and_the_table_as_written(tmp_path: Path) -> None:
    lint = lint_body(
        tmp_path,
        '-- header\n\nCREATE SCHEMA IF NOT EXISTS sales;\nCREATE INDEX IF NOT EXISTS i\n  ON sales."Orders" (x);\n'
        "DROP INDEX IF EXISTS sales.old_index;\n",
    )
    by_rule = {finding.rule: finding for finding in lint.findings}
    assert by_rule["require-concurrent-index-creation"].line == 4
    assert by_rule["require-concurrent-index-creation"].table == 'sales."Orders"'
    assert by_rule["require-concurrent-index-deletion"].index == "sales.old_index"
    assert by_rule["require-concurrent-index-deletion"].line == 6


def test_squawk_ignore_before_a_statement_acknowledges_that_statement_only(tmp_path: Path) -> None:
    lint = lint_body(
        tmp_path,
        "-- squawk-ignore require-concurrent-index-creation\nCREATE INDEX IF NOT EXISTS a ON orders (x);\n"
        "CREATE INDEX IF NOT EXISTS b ON orders (note);\n",
    )
    found = [(f.line, f.acknowledged) for f in lint.findings if f.rule == "require-concurrent-index-creation"]
    assert found == [(2, True), (3, False)]


def test_squawk_ignore_file_acknowledges_every_statement_and_our_rule_honours_it(tmp_path: Path) -> None:
    lint = lint_body(
        tmp_path,
        "INSERT INTO orders (id) VALUES (1);\n-- squawk-ignore-file insert-without-on-conflict, changing-column-type\n"
        "INSERT INTO orders (id) VALUES (2);\nALTER TABLE orders ALTER COLUMN x TYPE text;\n",
    )
    acknowledged = {(f.rule, f.line): f.acknowledged for f in lint.findings}
    assert acknowledged == {
        (INSERT_RULE, 1): True,
        (INSERT_RULE, 3): True,
        ("changing-column-type", 4): True,
    }


def test_acknowledged_errors_stay_in_the_report_and_do_not_block(tmp_path: Path) -> None:
    body = "-- squawk-ignore\nINSERT INTO orders (id) VALUES (1);\nINSERT INTO orders (id) VALUES (2);\n"
    lines = [(f.line, f.acknowledged) for f in judge([lint_body(tmp_path, body)], None, 100_000)]
    assert lines == [(2, True), (3, False)]  # a bare comment: every rule, for the next statement only
    body = "SELECT 1;\n\nSELECT FROM WHERE;\n"
    findings = {f.rule: f for f in judge([lint_body(tmp_path, body)], None, 100_000)}
    assert findings["syntax-error"].blocking and findings["syntax-error"].line == 3
    body = "-- squawk-ignore-file syntax-error\n" + body
    findings = {f.rule: f for f in judge([lint_body(tmp_path, body)], None, 100_000)}
    error = findings["syntax-error"]
    assert error.severity == "error" and error.acknowledged and not error.blocking


def test_a_statement_the_runner_cannot_run_is_refused_before_linting(tmp_path: Path) -> None:
    with pytest.raises(InvalidMigrationError, match=r"002_change.sql:2: .*cannot run inside a transaction"):
        lint_body(tmp_path, "CREATE TABLE IF NOT EXISTS t (id bigint);\nCREATE INDEX CONCURRENTLY i ON t (id);\n")


def test_no_transaction_files_are_linted_as_such(tmp_path: Path) -> None:
    lint = lint_body(tmp_path, NO_TRANSACTION + "CREATE INDEX CONCURRENTLY orders_x ON orders (x);\n")
    assert "ban-concurrent-index-creation-in-transaction" not in rules_of(lint)
    assert "prefer-robust-stmts" in rules_of(lint)  # a failed no-transaction file runs again from its start


def test_the_shipped_migrations_have_no_error() -> None:
    directory = Path(__file__).resolve().parents[2] / "database" / "migrations"
    findings = judge(lint_migrations(load_migrations(directory), str), None, 100_000)
    assert not [f for f in findings if f.severity == "error"]
