"""Splitting, transaction rules and checksums of one migration file, without a database."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from database.migrator.errors import InvalidMigrationError
from database.migrator.parsing import (
    NO_TRANSACTION_MARKER,
    ParsedMigration,
    Statement,
    file_digest,
    has_statements,
    parse_migration,
    read_migration,
)

GUIDE_003 = Path(__file__).resolve().parents[2] / "database" / "migrations" / "003_add_savings_groups.sql"
PATH = Path("migrations/005_test.sql")


def parse(sql: str) -> ParsedMigration:
    return parse_migration(PATH, sql)


def sqls(sql: str) -> list[str]:
    return [statement.sql for statement in parse(sql).statements]


# --- splitting -------------------------------------------------------------------------------

FUNCTION_WITH_DOLLAR_BODY = """CREATE FUNCTION f() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := now(); -- a ; in a comment
    RETURN NEW;
END;
$$ LANGUAGE plpgsql"""

TAGGED_BODY_WITH_INNER_DOLLARS = """CREATE FUNCTION g() RETURNS void AS $fn$
BEGIN
    EXECUTE $$SELECT 1; SELECT 2;$$;
    RAISE NOTICE 'done; really';
END
$fn$ LANGUAGE plpgsql"""

DO_BLOCK = """DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_type WHERE typname = 'mood') THEN
        CREATE TYPE mood AS ENUM ('sad', 'ok');
    END IF;
END
$do$"""

TRIGGER = """CREATE TRIGGER t_touch
    BEFORE UPDATE ON t
    FOR EACH ROW EXECUTE FUNCTION f()"""

BEGIN_ATOMIC = """CREATE FUNCTION grade(score int) RETURNS text LANGUAGE sql
BEGIN ATOMIC
    SELECT CASE WHEN score > 50 THEN 'pass' ELSE 'fail' END;
    SELECT CASE score WHEN 1 THEN 'one' END;
END"""

PROCEDURE_BEGIN_ATOMIC = """CREATE OR REPLACE PROCEDURE bump(n int) LANGUAGE sql
BEGIN ATOMIC
    UPDATE counters SET value = value + n;
    INSERT INTO audit VALUES (CASE WHEN n > 0 THEN 'up' ELSE 'down' END);
END"""

RULE = "CREATE RULE r AS ON INSERT TO t DO ALSO (INSERT INTO log VALUES (1); NOTIFY t_changed)"


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        pytest.param("SELECT 1; SELECT 2;", ["SELECT 1", "SELECT 2"], id="two-simple"),
        pytest.param(
            FUNCTION_WITH_DOLLAR_BODY + ";\nSELECT 1;", [FUNCTION_WITH_DOLLAR_BODY, "SELECT 1"], id="dollar-body"
        ),
        pytest.param(
            TAGGED_BODY_WITH_INNER_DOLLARS + ";\nSELECT 1;",
            [TAGGED_BODY_WITH_INNER_DOLLARS, "SELECT 1"],
            id="tagged-dollar-with-inner-$$",
        ),
        pytest.param(
            "SELECT $a_1$ ; $b$ ; $b$ $a_1$; SELECT 2;",
            ["SELECT $a_1$ ; $b$ ; $b$ $a_1$", "SELECT 2"],
            id="tag-with-digits-and-other-tag-inside",
        ),
        pytest.param(DO_BLOCK + ";\nSELECT 1;", [DO_BLOCK, "SELECT 1"], id="do-block"),
        pytest.param(
            FUNCTION_WITH_DOLLAR_BODY + ";\n" + TRIGGER + ";", [FUNCTION_WITH_DOLLAR_BODY, TRIGGER], id="trigger"
        ),
        pytest.param(
            "INSERT INTO t VALUES ('it''s; fine', ';'); SELECT 2;",
            ["INSERT INTO t VALUES ('it''s; fine', ';')", "SELECT 2"],
            id="single-quotes-doubled-and-semicolons",
        ),
        pytest.param(r"SELECT E'it\'s; \\'; SELECT e'\'';", [r"SELECT E'it\'s; \\'", r"SELECT e'\''"], id="e-strings"),
        pytest.param(
            r"SELECT 'C:\'; SELECT 2;", [r"SELECT 'C:\'", "SELECT 2"], id="backslash-is-literal-in-plain-string"
        ),
        pytest.param(
            """CREATE TABLE "odd;name" ("col "";" int); SELECT 2;""",
            ["""CREATE TABLE "odd;name" ("col "";" int)""", "SELECT 2"],
            id="quoted-identifiers",
        ),
        pytest.param(
            "SELECT 1 -- trailing ; and ' and \"\n; SELECT 2;",
            ["SELECT 1 -- trailing ; and ' and \"", "SELECT 2"],
            id="line-comment",
        ),
        pytest.param(
            "SELECT /* a ; ' \" /* nested ; */ still ; comment */ 1; SELECT 2;",
            ["SELECT /* a ; ' \" /* nested ; */ still ; comment */ 1", "SELECT 2"],
            id="nested-block-comment",
        ),
        pytest.param(
            "SELECT '-- not a comment; /* nor this'; SELECT 2;",
            ["SELECT '-- not a comment; /* nor this'", "SELECT 2"],
            id="comment-markers-inside-string",
        ),
        pytest.param(BEGIN_ATOMIC + ";\nSELECT 1;", [BEGIN_ATOMIC, "SELECT 1"], id="begin-atomic-with-case"),
        pytest.param(
            PROCEDURE_BEGIN_ATOMIC + ";\nSELECT 1;", [PROCEDURE_BEGIN_ATOMIC, "SELECT 1"], id="procedure-begin-atomic"
        ),
        pytest.param(RULE + ";\nSELECT 1;", [RULE, "SELECT 1"], id="rule-with-parenthesised-actions"),
        pytest.param("SELECT 1;\nSELECT 2", ["SELECT 1", "SELECT 2"], id="last-without-semicolon"),
        pytest.param("SELECT 1;\nSELECT 2 -- done\n", ["SELECT 1", "SELECT 2 -- done"], id="last-with-comment"),
        pytest.param(";;SELECT 1;;\n;\nSELECT 2;;", ["SELECT 1", "SELECT 2"], id="empty-statements"),
        pytest.param(
            "ALTER TABLE t ADD COLUMN begin date;\nSELECT 2;",
            ["ALTER TABLE t ADD COLUMN begin date", "SELECT 2"],
            id="column-named-begin",
        ),
        pytest.param(
            "CREATE TABLE spans (begin int, finish int);\nINSERT INTO spans (begin) VALUES (1);\nSELECT 3;",
            ["CREATE TABLE spans (begin int, finish int)", "INSERT INTO spans (begin) VALUES (1)", "SELECT 3"],
            id="begin-in-parentheses",
        ),
        pytest.param(
            "UPDATE t SET a = CASE WHEN b THEN 1 ELSE 2 END; SELECT 2;",
            ["UPDATE t SET a = CASE WHEN b THEN 1 ELSE 2 END", "SELECT 2"],
            id="case-outside-function",
        ),
        pytest.param(
            "CREATE FUNCTION f() RETURNS TABLE (begin int) LANGUAGE sql AS 'SELECT 1; SELECT 2'; SELECT 3;",
            ["CREATE FUNCTION f() RETURNS TABLE (begin int) LANGUAGE sql AS 'SELECT 1; SELECT 2'", "SELECT 3"],
            id="function-with-quoted-body-and-begin-column",
        ),
        pytest.param(
            "PREPARE q (int) AS SELECT $1; SELECT price$ FROM a$b;",
            ["PREPARE q (int) AS SELECT $1", "SELECT price$ FROM a$b"],
            id="parameters-and-dollar-in-identifiers",
        ),
        pytest.param(
            "SELECT U&'d\\0061t;' , U&\"a;\"; SELECT 2;",
            ["SELECT U&'d\\0061t;' , U&\"a;\"", "SELECT 2"],
            id="unicode-escapes",
        ),
        pytest.param("SELECT 'été;', \"naïve;\"; SELECT 2;", ["SELECT 'été;', \"naïve;\"", "SELECT 2"], id="non-ascii"),
    ],
)
def test_splits_like_psql(sql: str, expected: list[str]) -> None:
    assert sqls(sql) == expected


def test_guides_003_migration_splits_into_its_three_statements() -> None:
    _raw, text = read_migration(GUIDE_003)
    parsed = parse_migration(GUIDE_003, text)

    assert [s.sql.split(None, 4)[:4] for s in parsed.statements] == [
        ["CREATE", "TABLE", "IF", "NOT"],
        ["CREATE", "OR", "REPLACE", "FUNCTION"],
        ["CREATE", "OR", "REPLACE", "TRIGGER"],
    ]
    lines = text.splitlines()
    for statement in parsed.statements:
        assert lines[statement.line - 1].startswith("CREATE")
    assert "RETURN NEW;\nEND;\n$$ LANGUAGE plpgsql" in parsed.statements[1].sql
    assert parsed.in_transaction


def test_statement_lines_are_where_each_statement_starts() -> None:
    sql = (
        "-- header\n"  # 1
        "/* block\n"  # 2
        "   comment */ SELECT 1;\n"  # 3
        "\n"  # 4
        "INSERT INTO t VALUES ('multi\n"  # 5
        "line'); SELECT 2;\n"  # 6
        "CREATE FUNCTION f() RETURNS int AS $$\n"  # 7
        "SELECT 1;\n"  # 8
        "$$ LANGUAGE sql;\n"  # 9
        ";;\n"  # 10
        "  SELECT\n"  # 11
        "  3"  # 12
    )
    assert [(s.line, s.sql.split()[0]) for s in parse(sql).statements] == [
        (3, "SELECT"),
        (5, "INSERT"),
        (6, "SELECT"),
        (7, "CREATE"),
        (11, "SELECT"),
    ]


def test_lines_are_right_in_a_large_file() -> None:
    count = 5000
    sql = "".join(f"-- {i}\nINSERT INTO t VALUES ({i}, 'a;b');\n" for i in range(count))
    statements = parse(sql).statements
    assert len(statements) == count
    assert statements[0] == Statement("INSERT INTO t VALUES (0, 'a;b')", 2)
    assert statements[-1] == Statement(f"INSERT INTO t VALUES ({count - 1}, 'a;b')", 2 * count)


def test_crlf_file_splits_with_the_same_lines() -> None:
    lf = "SELECT 1;\n\nCREATE FUNCTION f() RETURNS int AS $$\nSELECT 1;\n$$ LANGUAGE sql;\nSELECT 2;\n"
    crlf = lf.replace("\n", "\r\n")
    assert [s.line for s in parse(crlf).statements] == [s.line for s in parse(lf).statements] == [1, 3, 6]


@pytest.mark.parametrize(
    ("sql", "message"),
    [
        pytest.param("SELECT 1;\nSELECT 'abc;\n", r"005_test.sql:2: unterminated quoted string", id="quote"),
        pytest.param("SELECT 1;\n\nSELECT E'abc\\';", r"005_test.sql:3: unterminated quoted string", id="e-string"),
        pytest.param('SELECT "abc;\n', r"005_test.sql:1: unterminated quoted string", id="identifier"),
        pytest.param("SELECT 1;\nDO $$ BEGIN END;", r"005_test.sql:2: unterminated \$\$ quote", id="dollar"),
        pytest.param("SELECT $fn$ x $$ y;", r"005_test.sql:1: unterminated \$fn\$ quote", id="tagged-dollar"),
        pytest.param("SELECT 1;\n/* a /* b */\n", r"005_test.sql:2: unterminated /\* comment", id="nested-comment"),
    ],
)
def test_unterminated_tokens_name_file_and_line(sql: str, message: str) -> None:
    with pytest.raises(InvalidMigrationError, match=message):
        parse(sql)


@pytest.mark.parametrize(
    "sql",
    ["", "   \n\t\n", "-- only a comment\n", "/* block */\n-- line\n", ";;\n;", f"{NO_TRANSACTION_MARKER}\n"],
    ids=["empty", "whitespace", "line-comment", "comments", "empty-statements", "marker-only"],
)
def test_files_without_statements_are_rejected(sql: str) -> None:
    assert not has_statements(PATH, sql)
    with pytest.raises(InvalidMigrationError, match=r"005_test.sql: contains no SQL statements"):
        parse(sql)


@pytest.mark.parametrize("sql", ["SELECT 1", "-- c\n;\nx", "/* c */ 'unterminated", "$$"])
def test_has_statements_stops_at_the_first_sql_token(sql: str) -> None:
    assert has_statements(PATH, sql)


# --- transactions ----------------------------------------------------------------------------

NON_TRANSACTIONAL = [
    "CREATE INDEX CONCURRENTLY idx ON t (c)",
    "create unique index concurrently if not exists idx on t (c)",
    "DROP INDEX CONCURRENTLY idx",
    "DROP INDEX CONCURRENTLY IF EXISTS idx",
    "REINDEX INDEX CONCURRENTLY idx",
    "REINDEX (VERBOSE) TABLE CONCURRENTLY t",
    "REINDEX DATABASE app",
    "REINDEX SYSTEM app",
    "REINDEX SCHEMA public",
    "VACUUM",
    "VACUUM (ANALYZE) t",
    "vacuum full t",
    "CREATE DATABASE other",
    "DROP DATABASE other",
    "DROP DATABASE IF EXISTS other",
    "CREATE TABLESPACE fast LOCATION '/ssd'",
    "DROP TABLESPACE fast",
    "ALTER SYSTEM SET work_mem = '64MB'",
    "ALTER TABLE measurements DETACH PARTITION m2020 CONCURRENTLY",
    "CREATE SUBSCRIPTION s CONNECTION 'host=x' PUBLICATION p",
    "CREATE\n    INDEX\n    CONCURRENTLY idx ON t (c)",
]


@pytest.mark.parametrize("sql", NON_TRANSACTIONAL)
def test_non_transactional_statements_are_refused_without_the_marker(sql: str) -> None:
    with pytest.raises(InvalidMigrationError) as caught:
        parse(f"-- header\nSELECT 1;\n\n{sql};\n")
    message = str(caught.value)
    assert message.startswith(f"{PATH}:4: ")
    assert "cannot run inside a transaction" in message
    assert NO_TRANSACTION_MARKER in message


@pytest.mark.parametrize("sql", NON_TRANSACTIONAL)
def test_non_transactional_statements_run_without_a_transaction_with_the_marker(sql: str) -> None:
    parsed = parse(f"-- 005: concurrent index\n{NO_TRANSACTION_MARKER}\n\n{sql};\n")
    assert not parsed.in_transaction
    assert [s.sql for s in parsed.statements] == [sql]


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE INDEX idx ON t (c)",
        "CREATE INDEX IF NOT EXISTS idx_concurrently ON t (c)",
        "DROP INDEX idx",
        "REINDEX INDEX idx",
        "REINDEX TABLE t",
        "CREATE TABLE vacuum_log (id int)",
        "INSERT INTO notes VALUES ('VACUUM; CREATE DATABASE x')",
        "ALTER TABLE measurements DETACH PARTITION m2020",
        "ALTER TABLE t ALTER COLUMN c SET DEFAULT 1",
        "CREATE VIEW databases AS SELECT 1",
        "SELECT 'COMMIT'",
        "SET LOCAL lock_timeout = '5s'",
    ],
)
def test_transactional_statements_are_allowed(sql: str) -> None:
    parsed = parse(f"{sql};")
    assert parsed.in_transaction
    assert [s.sql for s in parsed.statements] == [sql]


@pytest.mark.parametrize(
    "header",
    [
        f"{NO_TRANSACTION_MARKER}\n",
        f"-- 005_x: build an index\n\n{NO_TRANSACTION_MARKER}\n-- more words\n",
        f"/* intro */\n   {NO_TRANSACTION_MARKER}   \n",
        "-- MIGRATE:NO-TRANSACTION\n",
        f"{NO_TRANSACTION_MARKER}\r\n",
    ],
    ids=["first-line", "among-header-comments", "indented-after-block-comment", "upper-case", "crlf"],
)
def test_marker_in_the_header_turns_transactions_off(header: str) -> None:
    assert not parse(header + "CREATE INDEX CONCURRENTLY idx ON t (c);\n").in_transaction


@pytest.mark.parametrize(
    ("sql", "line"),
    [
        (f"SELECT 1;\n{NO_TRANSACTION_MARKER}\nSELECT 2;\n", 2),
        (f"-- header\nSELECT 1;\n\n\n{NO_TRANSACTION_MARKER}\n", 5),
        (f"SELECT 1,\n{NO_TRANSACTION_MARKER}\n2;\n", 2),
        (f"{NO_TRANSACTION_MARKER}\nSELECT 1;\n{NO_TRANSACTION_MARKER}\n", 3),
    ],
    ids=["between-statements", "at-the-end", "inside-a-statement", "repeated-later"],
)
def test_marker_after_the_first_statement_is_an_error(sql: str, line: int) -> None:
    with pytest.raises(InvalidMigrationError, match=rf"005_test.sql:{line}: .*must come before the first statement"):
        parse(sql)


@pytest.mark.parametrize(
    "sql",
    [
        f"INSERT INTO docs VALUES ('see:\n{NO_TRANSACTION_MARKER}\n');\n",
        f"CREATE FUNCTION f() RETURNS int AS $$\n{NO_TRANSACTION_MARKER}\nSELECT 1;\n$$ LANGUAGE sql;\n",
        f"SELECT 1; {NO_TRANSACTION_MARKER}\n",
        f"-- not the marker: {NO_TRANSACTION_MARKER}\nSELECT 1;\n",
        f"{NO_TRANSACTION_MARKER} please\nSELECT 1;\n",
    ],
    ids=["in-string", "in-function-body", "after-code-on-a-line", "inside-another-comment", "with-more-words"],
)
def test_marker_text_that_is_not_a_marker_line_is_ignored(sql: str) -> None:
    assert parse(sql).in_transaction


@pytest.mark.parametrize(
    ("sql", "word"),
    [
        ("BEGIN", "BEGIN"),
        ("begin transaction isolation level serializable", "BEGIN"),
        ("START TRANSACTION", "START"),
        ("COMMIT", "COMMIT"),
        ("commit prepared 'x'", "COMMIT"),
        ("END", "END"),
        ("ROLLBACK", "ROLLBACK"),
        ("ABORT", "ABORT"),
        ("SAVEPOINT s1", "SAVEPOINT"),
        ("RELEASE SAVEPOINT s1", "RELEASE"),
        ("ROLLBACK TO SAVEPOINT s1", "ROLLBACK"),
        ("PREPARE TRANSACTION 'x'", "PREPARE"),
    ],
)
@pytest.mark.parametrize("marker", ["", f"{NO_TRANSACTION_MARKER}\n"], ids=["transaction", "no-transaction"])
def test_transaction_control_is_refused_with_a_hint(sql: str, word: str, marker: str) -> None:
    with pytest.raises(InvalidMigrationError) as caught:
        parse(f"{marker}CREATE TABLE t (id int);\n{sql};\nSELECT 1;\n")
    message = str(caught.value)
    line = 3 if marker else 2
    assert message.startswith(f"{PATH}:{line}: {word} is not allowed in a migration")
    assert "wraps each file in its own transaction" in message


@pytest.mark.parametrize(
    "sql",
    [
        DO_BLOCK,
        "DO $$ BEGIN PERFORM 1; COMMIT; END $$",
        FUNCTION_WITH_DOLLAR_BODY,
        BEGIN_ATOMIC,
        PROCEDURE_BEGIN_ATOMIC,
        "CREATE PROCEDURE p() LANGUAGE plpgsql AS $$ BEGIN COMMIT; ROLLBACK; END $$",
        "ALTER TABLE t ADD COLUMN begin date",
        "SELECT 1 AS commit",
        "PREPARE q AS SELECT 1",
    ],
)
def test_begin_inside_bodies_is_not_transaction_control(sql: str) -> None:
    assert parse(f"{sql};\nSELECT 1;\n").in_transaction


# --- checksum and digest ---------------------------------------------------------------------

TABLE = """-- 005: orders
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    note text DEFAULT 'a  b',
    total numeric(12, 2)
);
INSERT INTO orders (id, note) VALUES (1, 'first');
"""
BODY = """
CREATE FUNCTION touch() RETURNS trigger AS $$
BEGIN
    RETURN NEW;
END
$$ LANGUAGE plpgsql;
"""
BASE = TABLE + BODY


def outside_body(edit: Callable[[str], str]) -> str:
    """`edit` applied to the SQL outside the function body (whose whitespace is a literal's)."""
    before, body, after = BODY.split("$$")
    return edit(TABLE) + edit(before) + "$$" + body + "$$" + edit(after)


def checksum(sql: str) -> str:
    return parse(sql).checksum


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(BASE.replace("-- 005: orders", "-- 005: orders, reworded"), id="comment-edited"),
        pytest.param(BASE.replace("-- 005: orders\n", ""), id="comment-removed"),
        pytest.param(BASE.replace("    total", "    /* money */ total  -- in euros\n   "), id="comments-added"),
        pytest.param(outside_body(lambda sql: sql.replace("\n    ", "\n\t")), id="reindented"),
        pytest.param(BASE.replace("(\n    id", "(id").replace(",\n    ", ", "), id="lines-joined"),
        pytest.param(
            outside_body(lambda sql: sql.replace(" ", "  ").replace("'a    b'", "'a  b'")), id="spaces-doubled"
        ),
        pytest.param(BASE.replace("numeric(12, 2)", "numeric ( 12 , 2 )"), id="spaces-around-punctuation"),
        pytest.param(outside_body(lambda sql: sql.replace(";\n", " ;\n\n\n")), id="blank-lines"),
        pytest.param(BASE.rstrip("\n"), id="no-final-newline"),
        pytest.param(BASE.replace("\n", "\r\n"), id="crlf"),
        pytest.param(BASE.replace("plpgsql;", "plpgsql"), id="no-final-semicolon"),
        pytest.param(BASE + ";;\n", id="empty-statements-added"),
    ],
)
def test_checksum_ignores_comments_whitespace_and_line_endings(variant: str) -> None:
    assert variant != BASE
    assert checksum(variant) == checksum(BASE)


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(BASE.replace("orders (\n", "purchases (\n"), id="identifier"),
        pytest.param(BASE.replace("'first'", "'First'"), id="literal"),
        pytest.param(BASE.replace("'a  b'", "'a b'"), id="whitespace-inside-literal"),
        pytest.param(BASE.replace("numeric(12, 2)", "numeric(14, 2)"), id="number"),
        pytest.param(BASE.replace("RETURN NEW;", "RETURN  NEW;"), id="whitespace-inside-function-body"),
        pytest.param(BASE.replace("RETURN NEW;", "RETURN OLD;"), id="function-body"),
        pytest.param(BASE.replace("$$", "$b$"), id="dollar-tag"),
        pytest.param(BASE + "SELECT 1;\n", id="statement-added"),
        pytest.param(BASE.replace("CREATE TABLE orders", 'CREATE TABLE "Orders"'), id="quoted-identifier"),
        pytest.param(BASE.replace("id bigint", "idbigint"), id="tokens-merged"),
        pytest.param(BASE.replace("plpgsql;", "plpgsql; SELECT 2"), id="tail-without-semicolon"),
        pytest.param(BASE.replace("'a  b'", "E'a  b'"), id="e-prefix"),
    ],
)
def test_checksum_changes_with_any_sql_change(variant: str) -> None:
    assert checksum(variant) != checksum(BASE)


def test_checksum_is_the_same_with_a_bom_read_from_disk(tmp_path: Path) -> None:
    plain = tmp_path / "001_plain.sql"
    plain.write_bytes(BASE.encode())
    bom = tmp_path / "002_bom.sql"
    bom.write_bytes(b"\xef\xbb\xbf" + BASE.replace("\n", "\r\n").encode())

    parsed = [parse_migration(path, read_migration(path)[1]) for path in (plain, bom)]

    assert parsed[0].checksum == parsed[1].checksum
    assert [s.line for s in parsed[0].statements] == [s.line for s in parsed[1].statements]


def test_bom_does_not_hide_transaction_control(tmp_path: Path) -> None:
    path = tmp_path / "001_begin.sql"
    path.write_bytes(b"\xef\xbb\xbfBEGIN;\nSELECT 1;\n")
    with pytest.raises(InvalidMigrationError, match=r"001_begin.sql:1: BEGIN is not allowed"):
        parse_migration(path, read_migration(path)[1])


# Checksums recorded in tracking tables by earlier versions: a faster splitter must give the
# same values, or every cosmetic edit of an old file would be reported as drift.
RECORDED_CHECKSUMS = {
    "CREATE OR REPLACE FUNCTION f(a int) RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n"
    "  SELECT CASE WHEN a > 0 THEN 1 ELSE 0 END;\n  SELECT a;\nEND;\nSELECT f(1);\n": (
        "5c433ea39b846826f58c9418be5a6b3a83480d06b375739acf33293950c0743d"
    ),
    "INSERT INTO t(v, w) VALUES (E'it\\'s', 'don''t'), ($$a;b$$, $tag$ $$ ; $tag$);\n"
    'COMMENT ON TABLE "Odd""Name" IS \'x\';\n': "a86e92d8b91d51decbfec57077f1e30cbdea38af1ba977928c9ffe3b044c6928",
    "/* header /* nested */ still */\n-- line\nSELECT 1/*inline*/+2; -- tail\r\nSELECT  (  3  ,  4  ) ;\r\n": (
        "b464991a89343b8940bd29c52a5f194af35159cd591360f9999f2099f15a1b27"
    ),
    "SELECT a::int, b->>'k', $1, 1.5e3, .5, x-y, -1, @z FROM t WHERE (a<>b) AND (c(d(e))) ;": (
        "1b91ed00253be1c4ff92b7ad5db5e5e517c5bd44ac09d6720d0acdfea3b145af"
    ),
    "CREATE TABLE café (naïve text DEFAULT 'é');\nSELECT ä, ß FROM café;\n": (
        "b252ce501ec7b8b5d094777599e3730f036637ca19ca8d33c4e951cf79a37417"
    ),
}
GUIDE_CHECKSUMS = {
    "001_initial_schema.sql": "ef36eb1772b5b16e4dd9e5a014b98d6c2116ca06cce2d02779d8cdb7b49f07d0",
    "002_add_user_profile.sql": "989a7b026c21596280fe02070885fb2269f27c2f55d7202c769304b02ee36955",
    "003_add_savings_groups.sql": "222ba3f170f7f38df481d0fd69cd10ada4b5f3aa524ea839e302f5b8eb46e680",
}


@pytest.mark.parametrize(("sql", "recorded"), RECORDED_CHECKSUMS.items())
def test_checksum_is_the_one_earlier_versions_recorded(sql: str, recorded: str) -> None:
    assert checksum(sql) == recorded


@pytest.mark.parametrize(("name", "recorded"), GUIDE_CHECKSUMS.items())
def test_guide_migrations_keep_their_recorded_checksums(name: str, recorded: str) -> None:
    path = GUIDE_003.parent / name
    _raw, text = read_migration(path)
    assert parse_migration(path, text).checksum == recorded


def test_checksum_is_a_sha256_hex_digest() -> None:
    value = checksum("SELECT 1;")
    assert len(value) == 64 and int(value, 16) >= 0


RAW = b"-- 001\nCREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n"


def test_file_digest_is_the_same_for_crlf_and_lf() -> None:
    assert file_digest(RAW.replace(b"\n", b"\r\n")) == file_digest(RAW)


@pytest.mark.parametrize(
    "variant",
    [
        RAW.replace(b"-- 001", b"-- 002"),
        RAW + b"\n",
        RAW.rstrip(b"\n"),
        RAW.replace(b" (id", b"  (id"),
        RAW.replace(b"\n", b"\r"),
        b"\xef\xbb\xbf" + RAW,
        RAW.replace(b"TABLE", b"table"),
    ],
    ids=["comment", "newline-added", "newline-removed", "space", "cr-only", "bom", "case"],
)
def test_file_digest_changes_with_any_other_byte(variant: bytes) -> None:
    assert file_digest(variant) != file_digest(RAW)


# --- reading ---------------------------------------------------------------------------------


def test_read_migration_strips_a_bom_and_keeps_the_raw_bytes(tmp_path: Path) -> None:
    path = tmp_path / "001_a.sql"
    raw = b"\xef\xbb\xbfSELECT 'caf\xc3\xa9';\n"
    path.write_bytes(raw)
    assert read_migration(path) == (raw, "SELECT 'café';\n")


@pytest.mark.parametrize(
    ("raw", "line"),
    [
        (b"SELECT '\xff';\n", 1),
        (b"-- latin-1 below\nSELECT 1;\nSELECT 'caf\xe9';\n", 3),
        (b"SELECT 1;\n\n\xc3", 3),
    ],
    ids=["first-line", "later-line", "truncated-sequence"],
)
def test_non_utf8_is_rejected_naming_file_and_line(tmp_path: Path, raw: bytes, line: int) -> None:
    path = tmp_path / "001_a.sql"
    path.write_bytes(raw)
    with pytest.raises(InvalidMigrationError, match=rf"001_a.sql:{line}: not valid UTF-8"):
        read_migration(path)


@pytest.mark.parametrize("sql", ["COPY t (a) FROM STDIN;", "COPY (SELECT 1) TO stdout WITH (FORMAT csv);"])
def test_copy_through_the_client_is_refused_before_running(tmp_path: Path, sql: str) -> None:
    with pytest.raises(InvalidMigrationError, match=r":2: COPY \.\.\. FROM STDIN / TO STDOUT streams data"):
        parse_migration(tmp_path / "001_copy.sql", f"CREATE TABLE t (a int);\n{sql}\n")


# --- password literals -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "line"),
    [
        ("CREATE ROLE app LOGIN PASSWORD 'hunter2';", 2),
        ("create role app with login encrypted password 'hunter2';", 2),
        ("ALTER ROLE app\n    PASSWORD E'hunter2';", 3),
        ("ALTER USER app WITH PASSWORD $$hunter2$$;", 2),
        ("CREATE USER app PASSWORD $pw$hunter2$pw$;", 2),
        ("CREATE USER app ENCRYPTED PASSWORD'hunter2' VALID UNTIL 'infinity';", 2),
        ("CREATE GROUP readers PASSWORD U&'hunter2';", 2),
        ("CREATE USER MAPPING FOR app SERVER files OPTIONS (user 'a', password 'hunter2');", 2),
        (
            "DO $$\nBEGIN\n  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN\n"
            "    CREATE ROLE app LOGIN PASSWORD 'hunter2';\n  END IF;\nEND\n$$;",
            5,
        ),
    ],
)
def test_password_literals_are_refused_naming_file_and_line(sql: str, line: int) -> None:
    with pytest.raises(InvalidMigrationError, match=rf"^{PATH}:{line}: a password literal") as refused:
        parse(f"CREATE TABLE t (a int);\n{sql}\n")
    assert "hunter2" not in str(refused.value)


@pytest.mark.parametrize(
    "sql",
    [
        "CREATE ROLE app LOGIN PASSWORD NULL;",
        "ALTER ROLE app WITH PASSWORD null;",
        "CREATE ROLE password_admin NOLOGIN;",
        "CREATE TABLE accounts (password text NOT NULL DEFAULT '');",
        "ALTER TABLE accounts ADD COLUMN password_hash text;\nCOMMENT ON COLUMN accounts.password_hash IS 'bcrypt';",
        "CREATE ROLE app;\nUPDATE settings SET value = 'hunter2' WHERE name = 'password';",
    ],
)
def test_statements_without_a_password_literal_are_accepted(sql: str) -> None:
    assert parse(sql).statements
