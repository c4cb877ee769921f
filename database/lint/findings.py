"""What the linter found, before and after the database is consulted. Pure data, no squawk or
pglast: the deploy function reads these from its asset (lint-report.json) and judges them there."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

Severity = Literal["error", "warning"]

# squawk's rules about an operation that locks or rewrites a table: how bad they are depends on the
# table's size in the database the migration will run on. Each: what the statement does, to what
# ({table} with its size), and what to do instead.
LOCKING_RULES: dict[str, str] = {
    "require-concurrent-index-creation": "CREATE INDEX on {table} blocks writes while it builds; "
    "build it CONCURRENTLY in a -- migrate:no-transaction file",
    "require-concurrent-index-deletion": "DROP INDEX on {table} takes an ACCESS EXCLUSIVE lock, blocking reads "
    "and writes until it ends; drop it CONCURRENTLY in a -- migrate:no-transaction file",
    "require-concurrent-reindex": "REINDEX of {table} blocks reads and writes while it rebuilds; "
    "REINDEX ... CONCURRENTLY in a -- migrate:no-transaction file",
    "changing-column-type": "changing a column's type rewrites {table} under an ACCESS EXCLUSIVE lock, "
    "blocking reads and writes; add a new column, backfill it in batches, then switch over",
    "adding-field-with-default": "adding a column with a volatile default rewrites {table} under an ACCESS "
    "EXCLUSIVE lock; add the column without a default, then set the default and backfill in batches",
    "adding-serial-primary-key-field": "adding a serial primary key rewrites {table} and builds its index under "
    "an ACCESS EXCLUSIVE lock; build a unique index CONCURRENTLY, then ADD PRIMARY KEY USING INDEX",
    "constraint-missing-not-valid": "adding a constraint scans every row of {table} while writes are blocked; "
    "add it NOT VALID, then VALIDATE CONSTRAINT in a later migration",
    "adding-foreign-key-constraint": "adding a foreign key scans {table} while writes to it and to the "
    "referenced table are blocked; add it NOT VALID, then VALIDATE CONSTRAINT in a later migration",
    "adding-not-nullable-field": "SET NOT NULL scans every row of {table} under an ACCESS EXCLUSIVE lock; "
    "add CHECK (column IS NOT NULL) NOT VALID, validate it, then SET NOT NULL",
    "disallowed-unique-constraint": "adding a UNIQUE constraint builds its index on {table} under an ACCESS "
    "EXCLUSIVE lock; CREATE UNIQUE INDEX CONCURRENTLY, then ADD CONSTRAINT ... UNIQUE USING INDEX",
}
# A NOT NULL column without a default cannot be added to a table that has rows, whatever its size.
REQUIRED_FIELD_RULE = "adding-required-field"
REQUIRED_FIELD_MESSAGE = (
    "adding a NOT NULL column without a default to {table} cannot succeed: the table has rows; add it "
    "with a DEFAULT, or nullable, backfill, then SET NOT NULL"
)
# Findings that fail whatever the data. (A statement that cannot run in a transaction, such as
# CREATE INDEX CONCURRENTLY, is refused before linting, by the runner's own parser, with file:line.)
ALWAYS_ERRORS = frozenset({"syntax-error"})


@dataclass(frozen=True)
class FileFinding:
    """A finding as the file alone gives it: squawk's (or ours), located, and the table its
    statement touches as written there (None when the rule is about no table)."""

    line: int  # 1-based line of the finding in the file
    rule: str
    message: str
    acknowledged: bool
    table: str | None = None  # schema-qualified only when the SQL qualifies it
    index: str | None = None  # DROP INDEX/REINDEX name: the table is found through it


@dataclass(frozen=True)
class FileLint:
    """Everything the linter says about one migration file."""

    version: str
    file: str  # as shown to people: relative to the project (or the asset)
    digest: str  # the file's digest (parsing.file_digest): a report is used only for the file it read
    findings: tuple[FileFinding, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FileLint:
        return cls(
            version=data["version"],
            file=data["file"],
            digest=data["digest"],
            findings=tuple(FileFinding(**finding) for finding in data["findings"]),
        )


@dataclass(frozen=True)
class Finding:
    """A finding with its severity decided, for people (--lint) and machines (--json)."""

    file: str
    line: int
    rule: str
    severity: Severity
    message: str
    acknowledged: bool
    table: str | None = None  # schema-qualified, when the database is known and has it
    estimated_rows: int | None = None
    total_bytes: int | None = None

    @property
    def blocking(self) -> bool:
        """An unacknowledged error: an apply does not start while one stands."""
        return self.severity == "error" and not self.acknowledged

    def to_dict(self) -> dict[str, Any]:
        data = {
            "file": self.file,
            "line": self.line,
            "rule": self.rule,
            "severity": self.severity,
            "message": self.message,
            "acknowledged": self.acknowledged,
        }
        if self.table is not None:
            data.update(table=self.table, estimated_rows=self.estimated_rows, total_bytes=self.total_bytes)
        return data

    def acknowledge_hint(self) -> str:
        return f"-- squawk-ignore {self.rule}"
