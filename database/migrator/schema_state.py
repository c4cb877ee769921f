"""Schema drift: the schema the migrations left, recorded after every apply that applied something,
and compared with the live schema on every status.

The schema is described from the catalog (no pg_dump: the deploy-time function has none) as a
canonical mapping ``"kind name" -> {attribute: value}``: schemas, extensions, tables, columns (type,
nullability, default, identity, generation), indexes, constraints, views, materialized views,
sequences, functions and procedures, triggers, enum/domain/composite types. Objects of extensions
and the runner's own tables are left out. Comparing two descriptions names each difference:
``index public.idx_users_phone_tmp added``, ``column public.users.phone: type text, was character
varying(20)``. The description and its SHA-256 (the fingerprint) live in one row of
schema_migrations_fingerprint, beside the tracking table.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from .errors import MigrationError
from .events import SchemaDrift
from .postgres import TRACKING_TABLE

if TYPE_CHECKING:
    import psycopg

    from .events import EventSink
    from .orchestration import LocalMigration, PreApplyCheck

FINGERPRINT_TABLE = f"{TRACKING_TABLE}_fingerprint"
Description = dict[str, dict[str, str]]

# Values longer than this are named as changed, not printed (a function's or view's whole body).
_SHOWN_VALUE_LENGTH = 120


class SchemaDriftError(MigrationError):
    """The live schema differs from the one the last apply recorded, and the settings refuse it."""


@dataclass(frozen=True)
class DriftReport:
    """The live schema against the recorded one: when that was recorded and what differs."""

    recorded_at: datetime
    changes: list[str]


# Every object as (key, attributes). %(tracking)s and %(fingerprint)s are the oids of the
# runner's tables (or NULL). Run with search_path = pg_catalog, so that every name in a type,
# default or definition comes schema-qualified and reads the same whatever the session's path.
_DESCRIBE = """
WITH members AS (
    SELECT classid, objid FROM pg_depend WHERE deptype = 'e'
), ours AS (
    SELECT oid FROM pg_class WHERE oid IN (%(tracking)s, %(fingerprint)s)
), namespaces AS (
    SELECT n.oid, n.nspname, quote_ident(n.nspname) AS quoted FROM pg_namespace n
     WHERE n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND n.nspname NOT LIKE 'pg\\_temp\\_%%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%%'
       AND (n.oid, 'pg_namespace'::regclass) NOT IN (SELECT objid, classid FROM members)
), relations AS (
    SELECT c.oid, c.relkind, c.relpersistence, c.relrowsecurity, n.quoted || '.' || quote_ident(c.relname) AS name
      FROM pg_class c JOIN namespaces n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'f', 'v', 'm', 'S')
       AND c.oid NOT IN (SELECT oid FROM ours)
       AND (c.oid, 'pg_class'::regclass) NOT IN (SELECT objid, classid FROM members)
       AND NOT EXISTS (SELECT 1 FROM pg_depend d  -- a serial column's sequence of the runner's tables
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('a', 'i')
                          AND d.refobjid IN (SELECT oid FROM ours))
), types AS (
    SELECT t.oid, t.typtype, t.typrelid, t.typbasetype, t.typtypmod, t.typnotnull, t.typdefaultbin,
           n.quoted || '.' || quote_ident(t.typname) AS name
      FROM pg_type t JOIN namespaces n ON n.oid = t.typnamespace
     WHERE (t.oid, 'pg_type'::regclass) NOT IN (SELECT objid, classid FROM members)
       AND (t.typtype IN ('e', 'd')
            OR (t.typtype = 'c' AND (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c'))
)
SELECT 'schema ' || quoted, '{}'::jsonb FROM namespaces
UNION ALL
SELECT 'extension ' || quote_ident(e.extname),
       jsonb_build_object('version', e.extversion, 'schema', quote_ident(e.extnamespace::regnamespace::text))
  FROM pg_extension e
UNION ALL
SELECT CASE r.relkind WHEN 'v' THEN 'view ' WHEN 'm' THEN 'materialized view ' WHEN 'S' THEN 'sequence '
                      ELSE 'table ' END || r.name,
       jsonb_strip_nulls(CASE
           WHEN r.relkind IN ('v', 'm') THEN jsonb_build_object('definition', pg_get_viewdef(r.oid))
           WHEN r.relkind = 'S' THEN (
               SELECT jsonb_build_object(
                          'type', format_type(s.seqtypid, NULL), 'start', s.seqstart::text,
                          'increment', s.seqincrement::text, 'minimum', s.seqmin::text,
                          'maximum', s.seqmax::text, 'cache', s.seqcache::text,
                          'cycle', CASE WHEN s.seqcycle THEN 'yes' ELSE 'no' END)
                 FROM pg_sequence s WHERE s.seqrelid = r.oid)
           ELSE jsonb_build_object(
                    'kind', CASE WHEN r.relkind = 'p' THEN 'partitioned' WHEN r.relkind = 'f' THEN 'foreign'
                                 WHEN r.relpersistence = 'u' THEN 'unlogged' ELSE 'ordinary' END,
                    'row level security', CASE WHEN r.relrowsecurity THEN 'enabled' ELSE 'disabled' END)
       END)
  FROM relations r
UNION ALL
SELECT 'column ' || r.name || '.' || quote_ident(a.attname),
       jsonb_strip_nulls(jsonb_build_object(
           'on', 'table ' || r.name,
           'type', format_type(a.atttypid, a.atttypmod),
           'nullability', CASE WHEN a.attnotnull THEN 'NOT NULL' ELSE 'nullable' END,
           'default', CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
           'generated as', CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
           'identity', CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
           'collation', CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation
                             THEN a.attcollation::regcollation::text END))
  FROM relations r
  JOIN pg_attribute a ON a.attrelid = r.oid AND a.attnum > 0 AND NOT a.attisdropped
  JOIN pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE r.relkind IN ('r', 'p', 'f')
UNION ALL
SELECT 'index ' || n.quoted || '.' || quote_ident(c.relname),
       jsonb_build_object('on', 'table ' || r.name, 'definition', pg_get_indexdef(i.indexrelid))
  FROM pg_index i
  JOIN relations r ON r.oid = i.indrelid
  JOIN pg_class c ON c.oid = i.indexrelid
  JOIN namespaces n ON n.oid = c.relnamespace
 WHERE NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
UNION ALL
SELECT 'constraint ' || COALESCE(r.name, ty.name) || '.' || quote_ident(k.conname),
       jsonb_build_object('on', COALESCE('table ' || r.name, 'domain ' || ty.name),
                          'definition', pg_get_constraintdef(k.oid))
  FROM pg_constraint k
  LEFT JOIN relations r ON r.oid = k.conrelid
  LEFT JOIN types ty ON ty.oid = k.contypid
 WHERE r.oid IS NOT NULL OR ty.oid IS NOT NULL
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'procedure ' WHEN 'a' THEN 'aggregate ' ELSE 'function ' END
           || n.quoted || '.' || quote_ident(p.proname) || '(' || pg_get_function_identity_arguments(p.oid) || ')',
       jsonb_strip_nulls(jsonb_build_object(
           'definition', CASE WHEN p.prokind <> 'a' THEN pg_get_functiondef(p.oid) END,
           'result', CASE WHEN p.prokind = 'a' THEN pg_get_function_result(p.oid) END))
  FROM pg_proc p JOIN namespaces n ON n.oid = p.pronamespace
 WHERE (p.oid, 'pg_proc'::regclass) NOT IN (SELECT objid, classid FROM members)
UNION ALL
SELECT 'trigger ' || r.name || '.' || quote_ident(g.tgname),
       jsonb_build_object('on', 'table ' || r.name, 'definition', pg_get_triggerdef(g.oid),
                          'enabled', CASE g.tgenabled WHEN 'O' THEN 'yes' WHEN 'D' THEN 'no'
                                                      WHEN 'R' THEN 'replica only' ELSE 'always' END)
  FROM pg_trigger g JOIN relations r ON r.oid = g.tgrelid
 WHERE NOT g.tgisinternal
UNION ALL
SELECT CASE ty.typtype WHEN 'd' THEN 'domain ' ELSE 'type ' END || ty.name,
       jsonb_strip_nulls(CASE ty.typtype
           WHEN 'e' THEN jsonb_build_object('labels', (
               SELECT string_agg(quote_literal(e.enumlabel), ', ' ORDER BY e.enumsortorder)
                 FROM pg_enum e WHERE e.enumtypid = ty.oid))
           WHEN 'd' THEN jsonb_build_object(
               'type', format_type(ty.typbasetype, ty.typtypmod),
               'nullability', CASE WHEN ty.typnotnull THEN 'NOT NULL' ELSE 'nullable' END,
               'default', pg_get_expr(ty.typdefaultbin, 0))
           ELSE jsonb_build_object('attributes', (
               SELECT string_agg(quote_ident(a.attname) || ' ' || format_type(a.atttypid, a.atttypmod), ', '
                                 ORDER BY a.attnum)
                 FROM pg_attribute a WHERE a.attrelid = ty.typrelid AND a.attnum > 0 AND NOT a.attisdropped))
       END)
  FROM types ty
"""


def describe(connection: psycopg.Connection[tuple[object, ...]]) -> Description:
    """The live schema, described from the catalog in one query, in a transaction of its own."""
    with connection.transaction():
        return _describe_in_transaction(connection)


def _describe_in_transaction(connection: psycopg.Connection[tuple[object, ...]]) -> Description:
    row = connection.execute(
        "SELECT to_regclass(%s)::oid, to_regclass(%s)::oid", (TRACKING_TABLE, FINGERPRINT_TABLE)
    ).fetchone()
    tracking, fingerprint = row if row else (None, None)
    connection.execute("SELECT set_config('search_path', 'pg_catalog', true)")
    rows = connection.execute(_DESCRIBE, {"tracking": tracking, "fingerprint": fingerprint}).fetchall()
    return {str(key): {str(name): str(value) for name, value in attributes.items()}  # type: ignore[attr-defined]
            for key, attributes in rows}


def fingerprint(description: Description) -> str:
    """SHA-256 of the description's canonical JSON: equal schemas, equal fingerprints."""
    canonical = json.dumps(description, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def compare(recorded: Description, live: Description) -> list[str]:
    """What changed from ``recorded`` to ``live``, one line per object, in name order. An object
    added or dropped together with the table it belongs to is not listed again."""
    added = live.keys() - recorded.keys()
    dropped = recorded.keys() - live.keys()
    changes = []
    for key in sorted(recorded.keys() | live.keys()):
        if key in added:
            if live[key].get("on") not in added:
                changes.append(f"{key} added")
        elif key in dropped:
            if recorded[key].get("on") not in dropped:
                changes.append(f"{key} dropped")
        elif recorded[key] != live[key]:
            changes.append(f"{key}: {_attribute_changes(recorded[key], live[key])}")
    return changes


def _attribute_changes(recorded: dict[str, str], live: dict[str, str]) -> str:
    parts = []
    for name in sorted(recorded.keys() | live.keys()):
        old, new = recorded.get(name), live.get(name)
        if old == new:
            continue
        if len(old or "") > _SHOWN_VALUE_LENGTH or len(new or "") > _SHOWN_VALUE_LENGTH:
            parts.append(f"{name} changed")
        else:
            parts.append(f"{name} {new or 'none'}, was {old or 'none'}")
    return "; ".join(parts)


def record(connection: psycopg.Connection[tuple[object, ...]], applied_by: str) -> None:
    """Record the live schema as the one the migrations left: after an apply that applied something."""
    from psycopg.types.json import Jsonb

    with connection.transaction():
        table = _qualified_fingerprint_table(connection)
        if table is None:
            connection.execute(
                f"""CREATE TABLE {FINGERPRINT_TABLE} (
                        singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
                        fingerprint text NOT NULL,
                        description jsonb NOT NULL,
                        recorded_at timestamptz NOT NULL DEFAULT now(),
                        recorded_by text)"""
            )
            table = _qualified_fingerprint_table(connection)
        description = _describe_in_transaction(connection)
        connection.execute(
            f"""INSERT INTO {table} (fingerprint, description, recorded_by) VALUES (%s, %s, %s)
                ON CONFLICT (singleton) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                    description = EXCLUDED.description, recorded_at = now(), recorded_by = EXCLUDED.recorded_by""",
            (fingerprint(description), Jsonb(description), applied_by),
        )


def _qualified_fingerprint_table(connection: psycopg.Connection[tuple[object, ...]]) -> str | None:
    """The table's schema-qualified name (None: no such table), read while the session's
    search_path still applies."""
    row = connection.execute(
        """SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass(%s)""",
        (FINGERPRINT_TABLE,),
    ).fetchone()
    return str(row[0]) if row else None


def read_drift(connection: psycopg.Connection[tuple[object, ...]]) -> DriftReport | None:
    """The live schema against the last recorded one; None when nothing was recorded yet. The
    recorded description is read only when the fingerprints differ."""
    with connection.transaction():
        table = _qualified_fingerprint_table(connection)
        if table is None:
            return None
        row = connection.execute(f"SELECT fingerprint, recorded_at FROM {table}").fetchone()
        if row is None:
            return None
        recorded_fingerprint, recorded_at = row
        live = _describe_in_transaction(connection)
        if fingerprint(live) == recorded_fingerprint:
            return DriftReport(recorded_at, [])  # type: ignore[arg-type]
        recorded = connection.execute(f"SELECT description FROM {table}").fetchone()
    return DriftReport(recorded_at, compare(recorded[0] if recorded else {}, live))  # type: ignore[arg-type]


def drift_check(*, refuse: bool) -> PreApplyCheck:
    """A pre-apply check that reports schema drift (a SchemaDrift event) before migrations run
    over it and, with ``refuse``, stops the run before anything is written."""

    def check(
        connection: psycopg.Connection[tuple[object, ...]], _pending: list[LocalMigration], emit: EventSink
    ) -> None:
        report = read_drift(connection)
        if report is None or not report.changes:
            return
        emit(SchemaDrift(report.changes))
        if refuse:
            raise SchemaDriftError(
                f"the schema changed outside migrations since the last apply "
                f"({report.recorded_at:%Y-%m-%d %H:%M:%S %Z}): "
                f"{'; '.join(report.changes)}. Nothing was applied. Undo the change, or put it in a migration and "
                "deploy once with this environment's schema_drift setting at report (cdk -c schema_drift=report)"
            )

    return check
