"""Database-aware severity: the same finding is an error on a big table and a warning on a small
or new one. The facts come from the database the migrations are about to run on, in one catalog
query, read only. No squawk, no pglast: this runs inside the deploy function too."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .findings import ALWAYS_ERRORS, LOCKING_RULES, REQUIRED_FIELD_MESSAGE, REQUIRED_FIELD_RULE, FileLint, Finding

if TYPE_CHECKING:
    import psycopg

# One query for every table the findings touch. A name may be an index (DROP INDEX, REINDEX): its
# table is judged. reltuples is the planner's estimate; a table never analyzed (-1) is counted, up to
# the threshold. Whether a table has any row at all is read directly (one row at most).
_FACTS_SQL = """
SELECT w.name,
       format('%%I.%%I', n.nspname, t.relname),
       t.reltuples::bigint,
       pg_total_relation_size(t.oid),
       CASE WHEN t.reltuples < 0 THEN (xpath('/row/n/text()', query_to_xml(
            format('SELECT count(*) AS n FROM (SELECT FROM %%s LIMIT %%s) s', t.oid::regclass, %(cap)s),
            false, true, '')))[1]::text::bigint END,
       (xpath('/row/n/text()', query_to_xml(
            format('SELECT count(*) AS n FROM (SELECT FROM %%s LIMIT 1) s', t.oid::regclass),
            false, true, '')))[1]::text::bigint > 0
FROM unnest(%(names)s::text[]) AS w(name)
CROSS JOIN LATERAL (SELECT to_regclass(w.name) AS oid) AS found
JOIN pg_class c ON c.oid = found.oid
LEFT JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_class t ON t.oid = coalesce(i.indrelid, c.oid) AND t.relkind IN ('r', 'm')
JOIN pg_namespace n ON n.oid = t.relnamespace
"""


@dataclass(frozen=True)
class TableFacts:
    """A table as the target database has it."""

    name: str  # schema-qualified
    estimated_rows: int
    total_bytes: int
    has_rows: bool
    counted: bool = False  # never analyzed: rows counted, up to the threshold
    capped: bool = False  # counted, and the count stopped at the threshold


def looked_up_names(files: Iterable[FileLint]) -> list[str]:
    """The tables and indexes whose size decides a finding's severity."""
    names = {
        finding.table or finding.index
        for lint in files
        for finding in lint.findings
        if finding.rule in LOCKING_RULES or finding.rule == REQUIRED_FIELD_RULE
    }
    return sorted(name for name in names if name)


def table_facts(
    connection: psycopg.Connection[tuple[object, ...]], names: list[str], error_rows: int
) -> dict[str, TableFacts]:
    """Facts for the named tables (and the tables of named indexes) that exist; read only, with a
    short lock_timeout so that a table locked by someone else cannot hold the lint up for long."""
    if not names:
        return {}
    with connection.transaction():
        connection.execute("SET LOCAL lock_timeout = '5s'")
        rows = connection.execute(_FACTS_SQL, {"names": names, "cap": error_rows}).fetchall()
    facts = {}
    for name, qualified, reltuples, total_bytes, counted, has_rows in rows:
        estimated = int(counted) if counted is not None else max(0, int(reltuples))  # type: ignore[call-overload]
        facts[str(name)] = TableFacts(
            name=str(qualified),
            estimated_rows=estimated,
            total_bytes=int(total_bytes),  # type: ignore[call-overload]
            has_rows=bool(has_rows),
            counted=counted is not None,
            capped=counted is not None and estimated >= error_rows,
        )
    return facts


def judge(files: list[FileLint], facts: dict[str, TableFacts] | None, error_rows: int) -> list[Finding]:
    """Severity for every finding of `files` (in the order they would run). `facts` None: no
    database to ask, so only what fails whatever the data is an error."""
    judged: list[Finding] = []
    for lint in files:
        for found in lint.findings:
            severity: str = "warning"
            message = found.message
            table: TableFacts | None = None
            written = found.table or found.index
            if found.rule in ALWAYS_ERRORS:
                severity = "error"
            elif (template := _template(found.rule)) is not None:
                shown = found.table or f"the table of index {found.index}"
                if facts is None:
                    message = template.format(table=shown)
                elif written is not None and (table := facts.get(written)) is not None:
                    message = template.format(table=f"{table.name} ({describe_size(table)})")
                    big = table.estimated_rows >= error_rows
                    if (found.rule == REQUIRED_FIELD_RULE and table.has_rows) or (
                        found.rule != REQUIRED_FIELD_RULE and big
                    ):
                        severity = "error"
                    elif found.rule != REQUIRED_FIELD_RULE:
                        message += f" (a warning below {error_rows:,} rows)"
                else:  # created by a pending migration, or misspelled: it will fail either way
                    message = template.format(table=f"{shown} (not in the database yet)")
            judged.append(
                Finding(
                    file=lint.file,
                    line=found.line,
                    rule=found.rule,
                    severity="error" if severity == "error" else "warning",
                    message=message,
                    acknowledged=found.acknowledged,
                    table=table.name if table else None,
                    estimated_rows=table.estimated_rows if table else None,
                    total_bytes=table.total_bytes if table else None,
                )
            )
    return judged


def _template(rule: str) -> str | None:
    return REQUIRED_FIELD_MESSAGE if rule == REQUIRED_FIELD_RULE else LOCKING_RULES.get(rule)


def describe_size(table: TableFacts) -> str:
    """'2.1 M rows, 410 MB': what a person needs to judge how long a lock lasts."""
    rows = table.estimated_rows
    if rows >= 1_000_000:
        counted = f"{rows / 1_000_000:.1f} M rows"
    elif rows >= 10_000:
        counted = f"{rows / 1_000:.0f} k rows"
    else:
        counted = f"{rows:,} row{'' if rows == 1 else 's'}"
    if table.capped:
        counted = f"at least {counted} (never analyzed)"
    elif table.counted:
        counted += " (counted: never analyzed)"
    return f"{counted}, {_bytes(table.total_bytes)}"


def _bytes(size: int) -> str:
    """As pg_size_pretty says it: bytes, kB, MB, GB, TB."""
    value, unit = float(size), "bytes"
    for larger in ("kB", "MB", "GB", "TB"):
        if value < 1024:
            break
        value, unit = value / 1024, larger
    return f"{value:.0f} {unit}" if unit == "bytes" or value >= 10 else f"{value:.1f} {unit}"
