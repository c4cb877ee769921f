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
      | reindex\s+(?:\([^)]*\)\s+)?(?:system|database|schema)\b
      | vacuum\b
      | (?:create|drop)\s+database\b
      | (?:create|drop)\s+tablespace\b
      | alter\s+system\b
      | alter\s+table\b.*\bdetach\s+partition\b.*\bconcurrently\b
      | create\s+subscription\b
    )""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)
# COPY that streams through the client: psql feeds it from the lines after it, the runner has no data to send.
_CLIENT_COPY = re.compile(r"^copy\b.*\b(?:from\s+stdin|to\s+stdout)\b", re.IGNORECASE | re.DOTALL)
_TRANSACTION_CONTROL = re.compile(
    r"^(?:begin|start\s+transaction|commit|end|rollback|abort|savepoint|release|prepare\s+transaction)\b",
    re.IGNORECASE,
)

_TOKEN = re.compile(
    r"""(?:
      (?P<ws>\s+)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*)
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*')
    | (?P<unterminated_estring>[eE]')
    | (?P<string>'(?:[^']|'')*')
    | (?P<ident>[^\W\d][\w$]*)
    | (?P<quoted_ident>"(?:[^"]|"")*")
    | (?P<dollar>\$(?:[^\W\d]\w*)?\$)
    | (?P<semicolon>;)
    | (?P<open>\()
    | (?P<close>\))
    | (?P<unterminated>['"])
    | (?P<other>[0-9]+(?:\.[0-9]*)?|\$[0-9]+|.)
    )\s*  # whitespace after a token is consumed with it: a third fewer loop turns
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
    statements, normalized, header_ends_at, markers = _split(path, text)
    if not statements:
        raise InvalidMigrationError(f"{path}: contains no SQL statements (empty or only comments)")
    in_transaction = not _has_no_transaction_marker(path, markers, header_ends_at)
    for statement in statements:
        _check_statement(path, statement, in_transaction)
    checksum = hashlib.sha256(normalized.encode("utf-8")).hexdigest()
    return ParsedMigration(tuple(statements), in_transaction, checksum)


def has_statements(path: Path, text: str) -> bool:
    """Whether `text` holds anything but whitespace, comments and empty statements; cheap: it
    stops at the first SQL token (used to reject empty files before any database work)."""
    lines = _LineCounter(text)
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        assert match is not None
        kind = match.lastgroup
        if kind == "block_comment":
            position = _skip_block_comment(path, text, position, lines)
        elif kind in ("ws", "line_comment", "semicolon"):
            position = match.end()
        else:
            return True
    return False


def _split(path: Path, text: str) -> tuple[list[Statement], str, int, list[tuple[int, int]]]:
    """Return the statements, the checksum text (comments dropped, whitespace folded, CRLF read
    as LF), the offset where the first statement starts (the end of the header comments) and
    the (offset, line) of every no-transaction marker comment line."""
    statements: list[Statement] = []
    normalized: list[str] = []
    markers: list[tuple[int, int]] = []
    lines = _LineCounter(text)
    start: int | None = None
    first_statement_at = len(text)
    paren_depth = 0
    begin_depth = 0
    head = ""  # psql's view of the statement's first words: "corf" for CREATE OR REPLACE FUNCTION
    position = 0
    length = len(text)
    while position < length:
        match = _TOKEN.match(text, position)
        assert match is not None  # the last alternative matches any character
        kind = match.lastgroup
        assert kind is not None  # every alternative is a named group
        if kind == "unterminated" or kind == "unterminated_estring":
            raise InvalidMigrationError(f"{path}:{lines.at(position)}: unterminated quoted string")
        after = match.end()  # the token and the whitespace after it
        if kind == "ws":
            position = after
            continue
        end = match.end(kind)  # the token alone
        if kind == "line_comment":
            if match.group(kind).rstrip().lower() == NO_TRANSACTION_MARKER and _starts_line(text, position):
                markers.append((position, lines.at(position)))
            position = after
            continue
        if kind == "block_comment":
            position = _skip_block_comment(path, text, position, lines)
            continue
        if kind == "dollar":
            tag = match.group(kind)
            close = text.find(tag, end)
            if close < 0:
                raise InvalidMigrationError(f"{path}:{lines.at(position)}: unterminated {tag} quote")
            end = after = close + len(tag)
        if start is None:
            if kind == "semicolon":  # an empty statement: nothing to run
                position = after
                continue
            start = position
            first_statement_at = min(first_statement_at, position)
            paren_depth = begin_depth = 0
            head = ""
        token = text[position:end]
        if kind == "ident":
            # psql's rule: BEGIN ... END (and CASE ... END inside it) only group semicolons in
            # the body of CREATE [OR REPLACE] FUNCTION/PROCEDURE, outside parentheses; a column
            # called "begin" elsewhere must not swallow the rest of the file.
            word = token.lower()
            if len(head) < 4:
                head += word[0] if word in _ROUTINE_WORDS else "-"
            if paren_depth == 0 and head.startswith(("cf", "cp", "corf", "corp")):
                if word == "begin" or (word == "case" and begin_depth > 0):
                    begin_depth += 1
                elif word == "end" and begin_depth > 0:
                    begin_depth -= 1
        elif kind == "open":
            paren_depth += 1
        elif kind == "close" and paren_depth > 0:
            paren_depth -= 1
        elif kind == "semicolon" and paren_depth == 0 and begin_depth == 0:
            statements.append(Statement(text[start:position].rstrip(), lines.at(start)))
            normalized.append(";\n")
            start = None
            position = after
            continue
        if normalized and normalized[-1] not in (";\n", "(") and kind not in ("close", "semicolon"):
            normalized.append(" ")
        normalized.append(token.replace("\r\n", "\n"))
        position = after
    if start is not None:
        tail = text[start:].rstrip()
        statements.append(Statement(tail, lines.at(start)))
        normalized.append(";\n")
    return statements, "".join(normalized), first_statement_at, markers


_ROUTINE_WORDS = frozenset({"create", "or", "replace", "function", "procedure"})


class _LineCounter:
    """1-based line numbers for increasing offsets, counting each newline once (not from 0 per
    call, which made files with thousands of statements quadratic)."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._offset = 0
        self._line = 1

    def at(self, offset: int) -> int:
        if offset < self._offset:  # not expected; stay correct anyway
            return self._text.count("\n", 0, offset) + 1
        self._line += self._text.count("\n", self._offset, offset)
        self._offset = offset
        return self._line


def _starts_line(text: str, offset: int) -> bool:
    """True when only spaces or tabs precede `offset` on its line."""
    line_start = text.rfind("\n", 0, offset) + 1
    return not text[line_start:offset].strip()


def _skip_block_comment(path: Path, text: str, position: int, lines: _LineCounter) -> int:
    """Return the offset after the (possibly nested) block comment starting at `position`."""
    depth = 0
    index = position
    while True:
        next_open = text.find("/*", index)
        next_close = text.find("*/", index)
        if next_close < 0:
            raise InvalidMigrationError(f"{path}:{lines.at(position)}: unterminated /* comment")
        if 0 <= next_open < next_close:
            depth += 1
            index = next_open + 2
            continue
        depth -= 1
        index = next_close + 2
        if depth == 0:
            return index


def _has_no_transaction_marker(path: Path, markers: list[tuple[int, int]], header_ends_at: int) -> bool:
    """The opt-out marker counts only in the header comments, where a reader sees it first. Only
    a real comment line counts: the same text inside a string or function body is just data."""
    for offset, line in markers:
        if offset >= header_ends_at:
            raise InvalidMigrationError(
                f"{path}:{line}: '{NO_TRANSACTION_MARKER}' must come before the first statement"
            )
    return bool(markers)


def _check_statement(path: Path, statement: Statement, in_transaction: bool) -> None:
    """Refuse, before anything runs, statements that would break the transaction handling."""
    if _TRANSACTION_CONTROL.match(statement.sql):
        word = statement.sql.split(None, 1)[0].upper()
        raise InvalidMigrationError(
            f"{path}:{statement.line}: {word} is not allowed in a migration: the runner wraps each file "
            f"in its own transaction. Remove the {word} statements (or, for statements that cannot run "
            f"in a transaction, add '{NO_TRANSACTION_MARKER}' as the first line)."
        )
    if _CLIENT_COPY.match(statement.sql):
        raise InvalidMigrationError(
            f"{path}:{statement.line}: COPY ... FROM STDIN / TO STDOUT streams data through the client, which "
            "a migration file cannot do here; use INSERT ... VALUES, or COPY from a file on the database server."
        )
    if in_transaction and _NON_TRANSACTIONAL.match(statement.sql):
        first_words = " ".join(statement.sql.split()[:4])
        raise InvalidMigrationError(
            f"{path}:{statement.line}: '{first_words} ...' cannot run inside a transaction. Put it in a "
            f"migration of its own whose first line is '{NO_TRANSACTION_MARKER}' (its statements then "
            "run one by one without a transaction, so write them to be safe to re-run, e.g. "
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS)."
        )
