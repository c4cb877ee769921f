"""Lint migration files: squawk's rules (configured in squawk.toml), located on PostgreSQL 17's own
parser (pglast) to name the table each finding touches, plus the one rule squawk lacks. Files
only, no database: severity comes later (severity.judge), from the database they will run on.

squawk drops the findings its ignore comments cover; ours stay in the report, marked acknowledged.
So squawk reads copies with those comments neutralised, and acknowledgement is decided here, with
squawk's own comment syntax: ``-- squawk-ignore RULE[, RULE]`` before a statement, or
``-- squawk-ignore-file RULE[, RULE]`` anywhere in the file (no RULE: every rule).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from database.migrator.errors import MigrationError
from database.postgres_version import POSTGRES_VERSION

from .findings import LOCKING_RULES, REQUIRED_FIELD_RULE, FileFinding, FileLint

if TYPE_CHECKING:
    from database.migrator.orchestration import LocalMigration
    from database.migrator.parsing import Statement

SQUAWK_CONFIG = Path(__file__).with_name("squawk.toml")
INSERT_RULE = "insert-without-on-conflict"
_INSERT_MESSAGE = (
    "INSERT without ON CONFLICT fails on a database that already has the row (one restored, seeded by hand, "
    "or a re-run); add ON CONFLICT DO NOTHING, or DO UPDATE"
)
_INSERT_START = re.compile(r"(?:WITH\b.*\b)?INSERT\b", re.IGNORECASE | re.DOTALL)
_IGNORE = re.compile(r"--\s*squawk-ignore(?P<file>-file)?\b[ \t]*(?P<rules>[^\n]*)")
_SIMPLE_NAME = re.compile(r"[a-z_][a-z0-9_$]*")


class LintError(MigrationError):
    """The linter itself could not run (squawk missing or failing); not a finding."""


def lint_migrations(migrations: list[LocalMigration], shown: Callable[[Path], str]) -> list[FileLint]:
    """Every finding in `migrations` (in their order), each file named as `shown` says."""
    if not migrations:
        return []
    raw = _run_squawk(migrations)
    return [_file_lint(m, shown(m.file.path), raw.get(m.file.path.name, [])) for m in migrations]


def _run_squawk(migrations: list[LocalMigration]) -> dict[str, list[dict[str, Any]]]:
    """squawk's raw findings by file name: one run for the files the runner wraps in a
    transaction, one for the `-- migrate:no-transaction` files."""
    found: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="squawk-") as scratch:
        for in_transaction in (True, False):
            group = [m for m in migrations if m.parsed.in_transaction is in_transaction]
            if not group:
                continue
            folder = Path(scratch) / ("transaction" if in_transaction else "no-transaction")
            folder.mkdir()
            paths = []
            for migration in group:
                if "squawk-ignore" not in migration.text:
                    paths.append(str(migration.file.path))
                    continue
                neutral = folder / migration.file.path.name
                neutral.write_text(migration.text.replace("squawk-ignore", "squawk_ignore"), encoding="utf-8")
                paths.append(str(neutral))
            command = [
                _squawk(), "--config", str(SQUAWK_CONFIG), "--pg-version", POSTGRES_VERSION, "--reporter", "json",
                "--assume-in-transaction" if in_transaction else "--no-assume-in-transaction", *paths,
            ]  # fmt: skip
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode not in (0, 1):
                raise LintError(f"squawk failed (exit {result.returncode}): {result.stderr.strip()[:500]}")
            try:
                reported = json.loads(result.stdout or "[]")
            except ValueError:
                raise LintError(f"squawk printed no JSON: {result.stdout[:200]!r}") from None
            for item in reported:
                found.setdefault(Path(item["file"]).name, []).append(item)
    return found


def _squawk() -> str:
    """squawk from this environment (uv.lock pins squawk-cli), else from PATH."""
    beside = Path(sys.executable).with_name("squawk")
    if beside.is_file():
        return str(beside)
    on_path = shutil.which("squawk")
    if on_path is None:
        raise LintError("squawk is not installed (squawk-cli, pinned in uv.lock): run scripts/setup.sh")
    return on_path


def _file_lint(migration: LocalMigration, shown: str, raw: list[dict[str, Any]]) -> FileLint:
    """One file's findings: squawk's, located on the runner's own statements (the tables they touch
    read by PostgreSQL's parser), a syntax check by that parser, and the INSERT rule."""
    from pglast.parser import ParseError, split

    text = migration.text
    statements = migration.parsed.statements
    findings: list[FileFinding] = []
    try:
        split(text, with_parser=True)  # PostgreSQL's own parser: the judge of syntax
    except ParseError as error:
        at = error.args[1] if len(error.args) > 1 and isinstance(error.args[1], int) else 0
        line = text.count("\n", 0, at) + 1
        findings.append(FileFinding(line, "syntax-error", f"{error.args[0]} (PostgreSQL's parser)", False))
        statements = ()  # nothing more can be read from it
    for statement in statements:
        if _INSERT_START.match(statement.sql):
            insert = _tree(statement.sql).get("InsertStmt")
            if insert is not None and "onConflictClause" not in insert:
                findings.append(FileFinding(statement.line, INSERT_RULE, _INSERT_MESSAGE, False))
    for item in raw:
        if item["rule_name"] == "syntax-error":
            continue  # PostgreSQL's parser (above) decides
        line = int(item["line"]) + 1
        message = item["message"] + (f" {item['help']}" if item.get("help") else "")
        table = index = None
        located = _statement_at(statements, line)
        if located is not None and (item["rule_name"] in LOCKING_RULES or item["rule_name"] == REQUIRED_FIELD_RULE):
            table, index = _target(_tree(located.sql))
        findings.append(FileFinding(line, item["rule_name"], message, False, table, index))
    whole_file, before_statement = _acknowledgements(text)
    marked = []
    for finding in findings:
        located = _statement_at(statements, finding.line)
        acknowledged_by = set(whole_file)
        for comment_line, rules in before_statement:
            if located is not None and _statement_after(statements, comment_line) is located:
                acknowledged_by |= rules
        acknowledged = "*" in acknowledged_by or finding.rule in acknowledged_by
        marked.append(replace(finding, acknowledged=acknowledged))
    marked.sort(key=lambda finding: (finding.line, finding.rule))
    return FileLint(migration.version, shown, migration.digest, tuple(marked))


def _tree(sql: str) -> dict[str, Any]:
    """One statement as PostgreSQL's parser reads it (pglast's JSON: no Python object per node)."""
    from pglast.parser import parse_sql_json

    parsed: dict[str, Any] = json.loads(parse_sql_json(sql))["stmts"][0]["stmt"]
    return parsed


def _target(tree: dict[str, Any]) -> tuple[str | None, str | None]:
    """(table, index) a statement locks, as written; the index only where the table is named by it."""
    (kind, node), = tree.items()
    if kind in ("IndexStmt", "AlterTableStmt") or (kind == "ReindexStmt" and node["kind"] != "REINDEX_OBJECT_INDEX"):
        return _name(node["relation"]), None
    if kind == "ReindexStmt":
        return None, _name(node["relation"])
    if kind == "DropStmt" and node.get("removeType") == "OBJECT_INDEX":
        return None, _dotted([item["String"]["sval"] for item in node["objects"][0]["List"]["items"]])
    return None, None


def _acknowledgements(text: str) -> tuple[set[str], list[tuple[int, set[str]]]]:
    """squawk's ignore comments: the rules for the whole file, and (line, rules) of the ones that
    cover the statement after them. No rule named: every rule ("*")."""
    whole_file: set[str] = set()
    before_statement: list[tuple[int, set[str]]] = []
    for match in _IGNORE.finditer(text):
        rules = {rule for rule in re.split(r"[\s,]+", match["rules"].strip()) if rule} or {"*"}
        if match["file"]:
            whole_file |= rules
        else:
            before_statement.append((text.count("\n", 0, match.start()) + 1, rules))
    return whole_file, before_statement


def _statement_at(statements: Sequence[Statement], line: int) -> Statement | None:
    """The statement a finding on `line` belongs to: the last one starting on or before it."""
    found = None
    for statement in statements:
        if statement.line > line:
            break
        found = statement
    return found


def _statement_after(statements: Sequence[Statement], line: int) -> Statement | None:
    return next((statement for statement in statements if statement.line > line), None)


def _name(relation: dict[str, Any]) -> str:
    return _dotted([part for part in (relation.get("schemaname"), relation["relname"]) if part])


def _dotted(parts: list[str]) -> str:
    """A name to_regclass reads back as written: parts quoted where SQL needs it."""
    return ".".join(part if _SIMPLE_NAME.fullmatch(part) else '"' + part.replace('"', '""') + '"' for part in parts)
