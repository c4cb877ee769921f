"""Measure what the pending migrations do to a database they are rehearsed on (a template copy
on a developer's server, a copy-on-write clone of a deployed cluster): the runner core applies
them while a second session watches, and the measurements are judged against budgets.

Per migration: its duration; the locks its session held on tables and for how long (pg_locks,
sampled from another session every few milliseconds, so a lock held for less than a sample may be
missed); the tables it rewrote (a new relfilenode); the indexes it built and their size. Shipped in
the migration function's asset: the deployed rehearsal measures inside the VPC."""

from __future__ import annotations

import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import psycopg

from database.migrator.errors import MigrationError
from database.migrator.events import Applied, Applying, Event, EventSink
from database.migrator.postgres import APPLICATION_NAME

if TYPE_CHECKING:
    from database.lint.findings import Finding
    from database.lint.gate import LintSource
    from database.migrator.orchestration import RunnerSettings

SAMPLE_SECONDS = 0.005
STRONGEST = "AccessExclusiveLock"  # the lock that blocks reads too: the one the lock budget limits
_TABLES = """
SELECT c.oid, format('%I.%I', n.nspname, c.relname), c.relfilenode, c.relkind, pg_relation_size(c.oid)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'm', 'i') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
"""
_HELD = """
SELECT format('%%I.%%I', n.nspname, c.relname), l.mode
FROM pg_locks l
JOIN pg_stat_activity a ON a.pid = l.pid
JOIN pg_class c ON c.oid = l.relation AND c.relkind IN ('r', 'p', 'm')
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.granted AND a.datname = current_database() AND a.application_name = %s
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND c.relname NOT IN ('schema_migrations', 'schema_repeatables', 'schema_migrations_fingerprint')  -- the runner's own
"""


@dataclass(frozen=True)
class Budgets:
    max_lock_seconds: float = 5.0  # an ACCESS EXCLUSIVE lock held longer is over budget
    max_duration_seconds: float = 600.0  # a migration running longer is over budget


@dataclass
class LockHeld:
    table: str
    mode: str  # as pg_locks names it
    held_ms: int


@dataclass
class MigrationMeasure:
    version: str
    duration_ms: int = 0
    locks: list[LockHeld] = field(default_factory=list)
    rewritten: list[str] = field(default_factory=list)
    indexes_built: list[dict[str, Any]] = field(default_factory=list)  # name, bytes
    over_budget: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "duration_ms": self.duration_ms,
            "locks": [{"table": lock.table, "mode": lock.mode, "held_ms": lock.held_ms} for lock in self.locks],
            "rewritten": self.rewritten,
            "indexes_built": self.indexes_built,
            "over_budget": self.over_budget,
        }


@dataclass
class Rehearsal:
    copy: str
    migrations: list[MigrationMeasure] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    failure: MigrationError | None = None

    @property
    def within_budgets(self) -> bool:
        return self.failure is None and not any(m.over_budget for m in self.migrations)

    def document(self, budgets: Budgets) -> dict[str, Any]:
        """The --json document's rehearsal keys; also what the migration function answers."""
        failure = None
        if (error := self.failure) is not None:
            failure = {"error": str(error), "kind": type(error).__name__, "exit_code": error.exit_code}
        limits = {"max_lock_seconds": budgets.max_lock_seconds, "max_duration_seconds": budgets.max_duration_seconds}
        return {
            "copy": self.copy,
            "budgets": limits,
            "migrations": [measure.to_dict() for measure in self.migrations],
            "findings": [finding.to_dict() for finding in self.findings],
            "failure": failure,
            "within_budgets": self.within_budgets,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Rehearsal:
        """The rehearsal a deployed migration function measured, as its answer carried it."""
        from database.lint.findings import Finding

        failure = None
        if document.get("failure"):
            failure = MigrationError(str(document["failure"]["error"]))
            failure.exit_code = int(document["failure"].get("exit_code") or 1)
        migrations = [
            MigrationMeasure(
                version=str(item["version"]),
                duration_ms=int(item["duration_ms"]),
                locks=[LockHeld(str(lock["table"]), str(lock["mode"]), int(lock["held_ms"])) for lock in item["locks"]],
                rewritten=[str(table) for table in item["rewritten"]],
                indexes_built=[{"name": str(i["name"]), "bytes": int(i["bytes"])} for i in item["indexes_built"]],
                over_budget=[str(sentence) for sentence in item["over_budget"]],
            )
            for item in document["migrations"]
        ]
        findings = [Finding(**finding) for finding in document.get("findings") or []]
        return cls(str(document["copy"]), migrations, findings, failure)


def measure_apply(
    settings: RunnerSettings, budgets: Budgets, lint_source: LintSource, error_rows: int, target: str, emit: EventSink
) -> Rehearsal:
    """Apply the pending migrations of ``settings`` (a database that is a copy: nothing here
    protects the original) with the runner core, no gate before it: the lint findings, judged with
    the copy's table sizes, are reported beside the measurements instead."""
    from database.lint.gate import lint_pending
    from database.migrator.orchestration import apply

    settings = replace(settings, pre_apply_check=None)
    rehearsal = Rehearsal(target)
    rehearsal.findings, _ = lint_pending(settings, lint_source, error_rows, emit)
    with _Observer(settings.connect.conninfo, emit) as observer:
        try:
            apply(settings, observer.event)
        except MigrationError as error:
            rehearsal.failure = error
        rehearsal.migrations = observer.measures
    for measure in rehearsal.migrations:
        _judge(measure, budgets)
    return rehearsal


class _Observer:
    """Between the runner's Applying and Applied events: the locks its session holds (sampled by
    a thread on a connection of its own), and the catalog before and after (another connection)."""

    def __init__(self, conninfo: str, emit: EventSink) -> None:
        self.emit = emit
        self.catalog = psycopg.connect(conninfo, autocommit=True)
        self.sampler = psycopg.connect(conninfo, autocommit=True)
        self.measures: list[MigrationMeasure] = []
        self.current: MigrationMeasure | None = None
        self.started = 0.0
        self.before: dict[int, tuple[str, int, str, int]] = {}
        self.seen: dict[tuple[str, str], list[float]] = {}  # (table, mode) -> [first, last]
        self.guard = threading.Lock()  # `seen` and `current`, shared with the sampling thread
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _Observer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        self.thread.join()
        if self.current is not None:  # the migration that failed: what it did until then
            self._finish(None)
        for connection in (self.catalog, self.sampler):
            with suppress(psycopg.Error):
                connection.close()

    def event(self, event: Event) -> None:
        if isinstance(event, Applying):
            self.before = self._tables()
            with self.guard:
                self.seen.clear()
                self.current = MigrationMeasure(event.version)
            self.started = time.monotonic()
        elif isinstance(event, Applied) and self.current is not None:
            self._finish(event.milliseconds)
        self.emit(event)

    def _finish(self, milliseconds: int | None) -> None:
        with self.guard:
            measure, self.current = self.current, None
            seen = dict(self.seen)
        if measure is None:
            return
        elapsed = round((time.monotonic() - self.started) * 1000)
        measure.duration_ms = milliseconds if milliseconds is not None else elapsed
        after = self._tables()
        indexes_before = {name for name, _, kind, _ in self.before.values() if kind == "i"}
        for oid, (name, relfilenode, kind, size) in sorted(after.items(), key=lambda item: item[1][0]):
            earlier = self.before.get(oid)
            if kind == "i" and name not in indexes_before:  # a rewrite rebuilds indexes under new oids
                measure.indexes_built.append({"name": name, "bytes": size})
            elif kind in ("r", "m") and earlier is not None and earlier[1] != relfilenode:
                measure.rewritten.append(name)
        for (table, mode), (first, last) in sorted(seen.items()):
            measure.locks.append(LockHeld(table, mode, round((last - first + SAMPLE_SECONDS) * 1000)))
        self.measures.append(measure)

    def _tables(self) -> dict[int, tuple[str, int, str, int]]:
        rows = self.catalog.execute(_TABLES).fetchall()
        return {int(r[0]): (str(r[1]), int(r[2]), str(r[3]), int(r[4])) for r in rows}

    def _sample(self) -> None:
        while not self.stop.is_set():
            if self.current is not None:
                now = time.monotonic()
                with suppress(psycopg.Error):
                    held = self.sampler.execute(_HELD, (APPLICATION_NAME,)).fetchall()
                    with self.guard:
                        for table, mode in held:
                            span = self.seen.setdefault((str(table), str(mode)), [now, now])
                            span[1] = now
            self.stop.wait(SAMPLE_SECONDS)


def _judge(measure: MigrationMeasure, budgets: Budgets) -> None:
    for lock in measure.locks:
        if lock.mode == STRONGEST and lock.held_ms > budgets.max_lock_seconds * 1000:
            measure.over_budget.append(
                f"ACCESS EXCLUSIVE lock on {lock.table} held {lock.held_ms / 1000:.1f} s "
                f"(budget {budgets.max_lock_seconds:g} s): it blocks reads and writes that long"
            )
    if measure.duration_ms > budgets.max_duration_seconds * 1000:
        measure.over_budget.append(
            f"ran {measure.duration_ms / 1000:.1f} s (budget {budgets.max_duration_seconds:g} s)"
        )
