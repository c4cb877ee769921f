"""Read one migration file and split it into statements, without a database.

The splitter follows psql's own lexer rules, so every file psql can run is split the same way:
quoted strings (including E'' escapes), quoted identifiers, dollar-quoted bodies, nested block
comments, parentheses, and CREATE FUNCTION ... BEGIN ATOMIC ... END bodies.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidMigrationError

NO_TRANSACTION_MARKER = "-- migrate:no-transaction"

# Statements PostgreSQL refuses inside a transaction block, matched on their leading words.
_NON_TRANSACTIONAL = re.compile(
    r"""^(?:
        (?:create|drop)\s+(?:unique\s+)?index\s+concurrently
      | reindex\b(?:\s+\([^)]*\))?\s+(?:\w+\s+)?concurrently
      | reindex\s+(?:\([^)]*\)\s+)?(?:system|database)\b
      | vacuum\b
      | (?:create|drop)\s+database\b
      | (?:create|drop)\s+tablespace\b
      | alter\s+system\b
      | alter\s+table\b.*\bdetach\s+partition\b.*\bconcurrently\b
      | create\s+subscription\b
    )""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
_TRANSACTION_CONTROL = re.compile(
    r"^(?:begin|start\s+transaction|commit|end|rollback|abort|savepoint|release|prepare\s+transaction)\b",
    re.IGNORECASE,
)

_TOKEN = re.compile(
    r"""
      (?P<ws>\s+)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*')
    | (?P<string>'(?:[^']|'')*')
    | (?P<ident>[A-Za-z_\x80-\uffff][A-Za-z0-9_$\x80-\uffff]*)
    | (?P<quoted_ident>"(?:[^"]|"")*")
    | (?P<dollar>\$(?:[A-Za-z_\x80-\uffff][A-Za-z0-9_\x80-\uffff]*)?\$)
    | (?P<semicolon>;)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<unterminated>['"])
    | (?P<other>[0-9]+(?:\.[0-9]*)?|\$[0-9]+|.)
    """,
    re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Statement:
    """One SQL statement, as written, with where it starts in its file."""

    sql: str
    line: int


@dataclass(frozen=True)
class ParsedMigration:
    """What the runner needs to apply a file: its statements and how to run them."""

    statements: tuple[Statement, ...]
    in_transaction: bool
    checksum: str


def file_digest(raw: bytes) -> str:
    """Digest of the file as stored, line endings normalised: the cheap 'unchanged' test."""
    return hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


def read_migration(path: Path) -> tuple[bytes, str]:
    """Read a file as UTF-8, rejecting what cannot be a migration before any SQL runs."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise InvalidMigrationError(f"{path}:{line}: not valid UTF-8 (byte offset {error.start})") from None
    return raw, text.removeprefix("\ufeff")


def parse_migration(path: Path, text: str) -> ParsedMigration:
    """Split `text` (the contents of `path`) into statements and decide how it must run."""
    statements, normalized, header_ends_at = _split(path, text)
    if not statements:
        raise InvalidMigrationError(f"{path}: contains no SQL statements (empty or only comments)")
    in_transaction = not _has_no_transaction_marker(path, text, header_ends_at)
    for statement in statements:
        _check_statement(path, statement, in_transaction)
    checksum = hashlib.sha256(normalized.encode("utf-8")).hexdigest()
    return ParsedMigration(tuple(statements), in_transaction, checksum)


def _split(path: Path, text: str) -> tuple[list[Statement], str, int]:
    """Return the statements, the checksum text (comments dropped, whitespace folded) and the
    offset where the first statement starts (the end of the header comments)."""
    statements: list[Statement] = []
    normalized: list[str] = []
    start: int | None = None
    first_statement_at = len(text)
    paren_depth = 0
    begin_depth = 0
    identifiers = 0
    position = 0
    length = len(text)
    while position < length:
        match = _TOKEN.match(text, position)
        assert match is not None  # the last alternative matches any character
        kind = match.lastgroup
        if kind == "unterminated":
            raise InvalidMigrationError(f"{path}:{_line_at(text, position)}: unterminated quoted string")
        end = match.end()
        if kind == "ws" or kind == "line_comment":
            position = end
            continue
        if kind == "block_comment":
            position = _skip_block_comment(path, text, position)
            continue
        if kind == "dollar":
            tag = match.group()
            close = text.find(tag, end)
            if close < 0:
                raise InvalidMigrationError(f"{path}:{_line_at(text, position)}: unterminated {tag} quote")
            end = close + len(tag)
        if start is None:
            if kind == "semicolon":  # an empty statement: nothing to run
                position = end
                continue
            start = position
            first_statement_at = min(first_statement_at, position)
            paren_depth = begin_depth = identifiers = 0
        token = text[position:end]
        if kind == "ident":
            identifiers += 1
            word = token.lower()
            if word in ("begin", "case"):
                if identifiers > 1:
                    begin_depth += 1
            elif word == "end" and begin_depth > 0:
                begin_depth -= 1
        elif kind == "open":
            paren_depth += 1
        elif kind == "close" and paren_depth > 0:
            paren_depth -= 1
        elif kind == "semicolon" and paren_depth == 0 and begin_depth == 0:
            statements.append(Statement(text[start:position].rstrip(), _line_at(text, start)))
            normalized.append(";\n")
            start = None
            position = end
            continue
        if normalized and normalized[-1] not in (";\n", "(") and kind not in ("close", "semicolon"):
            normalized.append(" ")
        normalized.append(token)
        position = end
    if start is not None:
        tail = text[start:].rstrip()
        statements.append(Statement(tail, _line_at(text, start)))
        normalized.append(";\n")
    return statements, "".join(normalized), first_statement_at


def _skip_block_comment(path: Path, text: str, position: int) -> int:
    """Return the offset after the (possibly nested) block comment starting at `position`."""
    depth = 0
    index = position
    while True:
        next_open = text.find("/*", index)
        next_close = text.find("*/", index)
        if next_close < 0:
            raise InvalidMigrationError(f"{path}:{_line_at(text, position)}: unterminated /* comment")
        if 0 <= next_open < next_close:
            depth += 1
            index = next_open + 2
            continue
        depth -= 1
        index = next_close + 2
        if depth == 0:
            return index


def _has_no_transaction_marker(path: Path, text: str, header_ends_at: int) -> bool:
    """The opt-out marker counts only in the header comments, where a reader sees it first."""
    found = False
    offset = 0
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if line.strip().lower() == NO_TRANSACTION_MARKER:
            if offset >= header_ends_at:
                raise InvalidMigrationError(
                    f"{path}:{number}: '{NO_TRANSACTION_MARKER}' must come before the first statement"
                )
            found = True
        offset += len(line)
    return found


def _check_statement(path: Path, statement: Statement, in_transaction: bool) -> None:
    """Refuse, before anything runs, statements that would break the transaction handling."""
    if _TRANSACTION_CONTROL.match(statement.sql):
        word = statement.sql.split(None, 1)[0].upper()
        raise InvalidMigrationError(
            f"{path}:{statement.line}: {word} is not allowed in a migration: the runner wraps each file "
            f"in its own transaction. Remove the {word} statements (or, for statements that cannot run "
            f"in a transaction, add '{NO_TRANSACTION_MARKER}' as the first line)."
        )
    if in_transaction and _NON_TRANSACTIONAL.match(statement.sql):
        first_words = " ".join(statement.sql.split()[:4])
        raise InvalidMigrationError(
            f"{path}:{statement.line}: '{first_words} ...' cannot run inside a transaction. Put it in a "
            f"migration of its own whose first line is '{NO_TRANSACTION_MARKER}' (its statements then "
            "run one by one without a transaction, so write them to be safe to re-run, e.g. "
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS)."
        )


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1
