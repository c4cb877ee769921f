"""Lint migration files: squawk's rules (configured in squawk.toml), located on PostgreSQL 17's own
parser (pglast) to name the table each finding touches, plus the one rule squawk lacks. Files
only, no database: severity comes later (severity.judge), from the database they will run on.

squawk drops the findings its ignore comments cover; ours stay in the report, marked acknowledged.
So squawk reads copies with those comments neutralised, and acknowledgement is decided here, with
squawk's own comment syntax: ``-- squawk-ignore RULE[, RULE]`` before a statement, or
``-- squawk-ignore-file RULE[, RULE]`` anywhere in the file (no RULE: every rule).
"""

from __future__ import annotations

import bisect
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from database.migrator.errors import MigrationError
from database.postgres_version import POSTGRES_VERSION

from .findings import FileFinding, FileLint

if TYPE_CHECKING:
    from database.migrator.orchestration import LocalMigration

SQUAWK_CONFIG = Path(__file__).with_name("squawk.toml")
INSERT_RULE = "insert-without-on-conflict"
_INSERT_MESSAGE = (
    "INSERT without ON CONFLICT fails on a database that already has the row (one restored, seeded by hand, "
    "or a re-run); add ON CONFLICT DO NOTHING, or DO UPDATE"
)
_IGNORE = re.compile(r"--\s*squawk-ignore(?P<file>-file)?\b[ \t]*(?P<rules>[^\n]*)")
_COMMENT_OR_SPACE = re.compile(r"(?:\s+|--[^\n]*|/\*.*?\*/)*", re.DOTALL)
_SIMPLE_NAME = re.compile(r"[a-z_][a-z0-9_$]*")


class LintError(MigrationError):
    """The linter itself could not run (squawk missing or failing); not a finding."""


@dataclass
class _Statement:
    start_line: int  # of its first token
    end_line: int
    acknowledges: set[str] = field(default_factory=set)  # rules its leading comments acknowledge; "*": all
    table: str | None = None
    index: str | None = None


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
            for migration in group:
                neutral = migration.text.replace("squawk-ignore", "squawk_ignore")
                (folder / migration.file.path.name).write_text(neutral, encoding="utf-8")
            command = [
                _squawk(), "--config", str(SQUAWK_CONFIG), "--pg-version", POSTGRES_VERSION, "--reporter", "json",
                "--assume-in-transaction" if in_transaction else "--no-assume-in-transaction",
                *(str(folder / m.file.path.name) for m in group),
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
    from pglast import ast, parse_sql
    from pglast.parser import ParseError

    text = migration.text
    lines = _LineIndex(text)
    findings: list[FileFinding] = []
    statements: list[_Statement] = []
    creates: list[str] = []
    try:
        parsed = parse_sql(text)
    except ParseError as error:
        at = error.args[1] if len(error.args) > 1 and isinstance(error.args[1], int) else 0
        findings.append(FileFinding(lines.line_of(at), "syntax-error", f"{error.args[0]} (PostgreSQL's parser)", False))
        parsed = ()
    for raw_statement in parsed:
        start = raw_statement.stmt_location
        end = start + raw_statement.stmt_len if raw_statement.stmt_len else len(text)
        first_token = _COMMENT_OR_SPACE.match(text, start).end()  # type: ignore[union-attr]
        statement = _Statement(lines.line_of(first_token), lines.line_of(max(first_token, end - 1)))
        statement.acknowledges = _rules_in(text[start:first_token], whole_file=False)
        node = raw_statement.stmt
        match node:
            case ast.IndexStmt() | ast.AlterTableStmt():
                statement.table = _name(node.relation)
            case ast.ReindexStmt() if node.relation is not None:
                if node.kind == _reindex_index():  # REINDEX INDEX: the relation is the index
                    statement.index = _name(node.relation)
                else:
                    statement.table = _name(node.relation)
            case ast.DropStmt() if node.removeType == _object_index():
                statement.index = _dotted([part.sval for part in node.objects[0]])
            case ast.CreateStmt():
                creates.append(_name(node.relation))
            case ast.CreateTableAsStmt():
                creates.append(_name(node.into.rel))
            case ast.InsertStmt() if node.onConflictClause is None:
                findings.append(FileFinding(statement.start_line, INSERT_RULE, _INSERT_MESSAGE, False))
        statements.append(statement)
    for item in raw:
        if item["rule_name"] == "syntax-error":
            continue  # PostgreSQL's own parser (above) is the judge of syntax
        line = int(item["line"]) + 1
        message = item["message"] + (f" {item['help']}" if item.get("help") else "")
        located = _statement_at(statements, line)
        findings.append(
            FileFinding(
                line=line,
                rule=item["rule_name"],
                message=message,
                acknowledged=False,
                table=located.table if located else None,
                index=located.index if located else None,
            )
        )
    whole_file = _rules_in(text, whole_file=True)
    marked = []
    for finding in findings:
        located = _statement_at(statements, finding.line)
        acknowledged_by = whole_file | (located.acknowledges if located else set())
        acknowledged = "*" in acknowledged_by or finding.rule in acknowledged_by
        marked.append(replace(finding, acknowledged=acknowledged))
    marked.sort(key=lambda finding: (finding.line, finding.rule))
    return FileLint(migration.version, shown, migration.digest, tuple(marked), tuple(creates))


def _rules_in(text: str, *, whole_file: bool) -> set[str]:
    """Rules the ignore comments in `text` name (file-wide ones, or statement ones)."""
    rules: set[str] = set()
    for match in _IGNORE.finditer(text):
        if bool(match["file"]) is not whole_file:
            continue
        named = {rule for rule in re.split(r"[\s,]+", match["rules"].strip()) if rule}
        rules |= named or {"*"}
    return rules


def _statement_at(statements: list[_Statement], line: int) -> _Statement | None:
    for statement in statements:
        if statement.start_line <= line <= statement.end_line:
            return statement
    return None


def _object_index() -> object:
    from pglast.enums import ObjectType

    return ObjectType.OBJECT_INDEX


def _reindex_index() -> object:
    from pglast.enums import ReindexObjectType

    return ReindexObjectType.REINDEX_OBJECT_INDEX


def _name(relation: Any) -> str:
    return _dotted([part for part in (relation.schemaname, relation.relname) if part])


def _dotted(parts: list[str]) -> str:
    """A name to_regclass reads back as written: parts quoted where SQL needs it."""
    return ".".join(part if _SIMPLE_NAME.fullmatch(part) else '"' + part.replace('"', '""') + '"' for part in parts)


class _LineIndex:
    def __init__(self, text: str) -> None:
        self.starts = [0] + [match.end() for match in re.finditer("\n", text)]

    def line_of(self, offset: int) -> int:
        return bisect.bisect_right(self.starts, offset)
