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
# A password written into a migration: CREATE/ALTER ROLE, USER or GROUP ... [ENCRYPTED] PASSWORD and a
# string literal ('', E'', U&'', dollar-quoted), also inside a DO or function body, and a user
# mapping's OPTIONS (password '...'). PASSWORD NULL is no literal. Searched only in a file that
# mentions "password" at all.
_PASSWORD_LITERAL = re.compile(
    r"""\b(?:create|alter)\s+(?:role|user|group)\b[^;]*?
        \b(?P<keyword>password)\s*(?=[eE]?'|[uU]&'|\$(?:[^\W\d]\w*)?\$)""",
    re.IGNORECASE | re.VERBOSE,
)
_TRANSACTION_CONTROL = re.compile(
    r"^(?:begin|start\s+transaction|commit|end|rollback|abort|savepoint|release|prepare\s+transaction)\b",
    re.IGNORECASE,
)

# One token that needs no special handling: a word, a number, a $1 parameter, a parenthesis, an
# operator or punctuation character. What starts a comment, a quote or a dollar quote is left out.
_PLAIN_TOKEN = r"""(?:
      (?![eE]')[^\W\d][\w$]*
    | [0-9]+(?:\.[0-9]*)?
    | \$[0-9]+
    | (?!--|/\*|[eE]'|\$(?:[^\W\d]\w*)?\$)[^\s'";]
    )"""
# The same tokens, found again inside a run of them, where nothing can start a comment or quote.
_RUN_TOKENS = re.compile(r"[^\W\d][\w$]*|[0-9]+(?:\.[0-9]*)?|\$[0-9]+|\S")
_WORD_START = re.compile(r"[^\W\d]")
_TOKEN = re.compile(
    rf"""(?:
      (?P<plain>{_PLAIN_TOKEN}(?:\s*{_PLAIN_TOKEN})*)  # a run of them: one match, joined in C
    | (?P<ws>\s+)
    | (?P<line_comment>--[^\n]*)
    | (?P<block_comment>/\*(?:[^*/]++|\*(?!/)|/(?!\*))*+\*/)  # one match unless nested
    | (?P<nested_comment>/\*)
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*')
    | (?P<unterminated_estring>[eE]')
    | (?P<string>'(?:[^']|'')*')
    | (?P<quoted_ident>"(?:[^"]|"")*")
    | (?P<dollar>\$(?P<tag>(?:[^\W\d]\w*)?)\$.*?\$(?P=tag)\$)
    | (?P<unterminated_dollar>\$(?:[^\W\d]\w*)?\$)
    | (?P<semicolon>;)
    | (?P<unterminated>['"])
    )\s*  # whitespace after a token is consumed with it: fewer loop turns
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
    if "password" in text.lower():  # cheap: most files never mention one
        _refuse_password_literals(path, statements)
    checksum = hashlib.sha256(normalized.encode("utf-8")).hexdigest()
    return ParsedMigration(tuple(statements), in_transaction, checksum)


def has_statements(path: Path, text: str) -> bool:
    """Whether `text` holds anything but whitespace, comments and empty statements; cheap: it
    stops at the first SQL token (used to reject empty files before any database work)."""
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        assert match is not None
        kind = match.lastgroup
        if kind == "nested_comment":
            position = _skip_block_comment(path, text, position, _LineCounter(text))
        elif kind in ("ws", "line_comment", "block_comment", "semicolon"):
            position = match.end()
        else:
            return True
    return False


def _split(path: Path, text: str) -> tuple[list[Statement], str, int, list[tuple[int, int]]]:
    """Return the statements, the checksum text (comments dropped, whitespace folded, CRLF read
    as LF), the offset where the first statement starts (the end of the header comments) and
    the (offset, line) of every no-transaction marker comment line.

    One regex walks the tokens (comments and dollar quotes included, as single matches); the
    loop restarts only after a nested comment, which the regex cannot match.
    """
    statements: list[Statement] = []
    normalized: list[str] = []
    append = normalized.append
    markers: list[tuple[int, int]] = []
    lines = _LineCounter(text)
    start = -1  # where the current statement starts; -1 between statements
    first_statement_at = len(text)
    paren_depth = 0
    begin_depth = 0  # BEGIN ... END nesting in a routine's body (see _follow_words)
    head = ""
    routine = False
    spaced = False  # the next token is written after a space
    position = 0
    while position < len(text):
        restart_at = len(text)
        for match in _TOKEN.finditer(text, position):
            kind = match.lastgroup
            assert kind is not None  # every alternative is a named group
            if kind == "ws" or kind == "block_comment":
                continue
            position = match.start()
            if kind == "line_comment":
                if match.group(kind).rstrip().lower() == NO_TRANSACTION_MARKER and _starts_line(text, position):
                    markers.append((position, lines.at(position)))
                continue
            if kind == "nested_comment":
                restart_at = _skip_block_comment(path, text, position, lines)
                break
            if kind in ("unterminated", "unterminated_estring"):
                raise InvalidMigrationError(f"{path}:{lines.at(position)}: unterminated quoted string")
            if kind == "unterminated_dollar":
                tag = match.group(kind)
                raise InvalidMigrationError(f"{path}:{lines.at(position)}: unterminated {tag} quote")
            if start < 0:
                if kind == "semicolon":  # an empty statement: nothing to run
                    continue
                start = position
                first_statement_at = min(first_statement_at, position)
                paren_depth = begin_depth = 0
                head = ""
                routine = False
            token = match.group(kind)
            if kind == "plain":
                tokens = _RUN_TOKENS.findall(token)
                if len(head) < 4 or routine:
                    head, routine, begin_depth, paren_depth = _follow_words(
                        tokens, head, routine, begin_depth, paren_depth
                    )
                elif "(" in token or ")" in token:
                    paren_depth = _paren_depth_after(tokens, paren_depth)
                # The checksum text: tokens one space apart, none after "(" or before ")".
                joined = " ".join(tokens)
                if "(" in token or ")" in token:
                    joined = joined.replace("( ", "(").replace(" )", ")")
                if spaced and tokens[0] != ")":
                    append(" ")
                append(joined)
                spaced = tokens[-1] != "("
                continue
            if kind == "semicolon":
                if paren_depth == 0 and begin_depth == 0:
                    statements.append(Statement(text[start:position].rstrip(), lines.at(start)))
                    append(";\n")
                    start = -1
                    spaced = False
                    continue
                append(token)  # inside parentheses or a routine's body
            else:
                if spaced:
                    append(" ")
                append(token.replace("\r\n", "\n"))
            spaced = True
        position = restart_at
    if start >= 0:
        tail = text[start:].rstrip()
        statements.append(Statement(tail, lines.at(start)))
        append(";\n")
    return statements, "".join(normalized), first_statement_at, markers


_ROUTINE_WORDS = frozenset({"create", "or", "replace", "function", "procedure"})


def _follow_words(
    tokens: list[str], head: str, routine: bool, begin_depth: int, paren_depth: int
) -> tuple[str, bool, int, int]:
    """Follow a statement's words and parentheses token by token while they matter: psql's rule
    is that BEGIN ... END (and CASE ... END inside it) group semicolons only in the body of
    CREATE [OR REPLACE] FUNCTION/PROCEDURE, outside parentheses, so a column called "begin"
    elsewhere must not swallow the rest of the file. `head` holds the statement's first words
    ("corf" for CREATE OR REPLACE FUNCTION)."""
    for index, token in enumerate(tokens):
        if len(head) >= 4 and not routine:
            return head, routine, begin_depth, _paren_depth_after(tokens[index:], paren_depth)
        if token == "(":
            paren_depth += 1
        elif token == ")":
            paren_depth = max(0, paren_depth - 1)
        elif _WORD_START.match(token):
            word = token.lower()
            if len(head) < 4:
                head += word[0] if word in _ROUTINE_WORDS else "-"
                routine = head.startswith(("cf", "cp", "corf", "corp"))
                if not routine and head not in ("c", "co", "cor"):
                    head = "----"  # it can no longer become a routine: stop following words
            if routine and paren_depth == 0:
                if word == "begin" or (word == "case" and begin_depth > 0):
                    begin_depth += 1
                elif word == "end" and begin_depth > 0:
                    begin_depth -= 1
    return head, routine, begin_depth, paren_depth


def _paren_depth_after(tokens: list[str], paren_depth: int) -> int:
    """The parenthesis depth after `tokens`; a ")" with none open is ignored, as psql does."""
    closes = tokens.count(")")
    if closes <= paren_depth:  # none can close below zero: count in C
        return paren_depth + tokens.count("(") - closes
    for token in tokens:
        if token == "(":
            paren_depth += 1
        elif token == ")" and paren_depth > 0:
            paren_depth -= 1
    return paren_depth


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
            f"in a transaction, add '{NO_TRANSACTION_MARKER}' to the file's header comments, before its "
            "first statement)."
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
            f"migration of its own with '{NO_TRANSACTION_MARKER}' in its header comments (its statements then "
            "run one by one without a transaction, so write them to be safe to re-run, e.g. "
            "CREATE INDEX CONCURRENTLY IF NOT EXISTS)."
        )


def _refuse_password_literals(path: Path, statements: list[Statement]) -> None:
    """A password in a migration sits in git for good and, with log_statement = ddl, in the
    database's logs: refuse the file, naming the line of the first one."""
    for statement in statements:
        match = _PASSWORD_LITERAL.search(statement.sql)
        if match is not None:
            line = statement.line + statement.sql.count("\n", 0, match.start("keyword"))
            raise InvalidMigrationError(
                f"{path}:{line}: a password literal (PASSWORD '...') would be kept in git and, with "
                "log_statement = ddl, in the database's logs. Create the role without one (or with PASSWORD NULL) "
                "and set the password outside migrations, from your secret store (psql's \\password sends it "
                "hashed)."
            )
