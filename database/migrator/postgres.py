"""Everything that speaks PostgreSQL: connecting, the runner lock, the tracking table, and
executing one migration together with its tracking row."""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import errors as pg_errors

from .errors import ConnectionFailedError, LockTimeoutError, MigrationError, MigrationFailedError
from .events import Connected, Connecting, ConnectRetry, EventSink, TrackingTableReady, WaitingForLock
from .parsing import ParsedMigration
from .redaction import password_of, redact_conninfo, scrub

TRACKING_TABLE = "schema_migrations"
# One key for every runner of this project, whatever the caller: pg_advisory_lock(bigint).
ADVISORY_LOCK_KEY = 7_361_224_905_513_284_721
APPLICATION_NAME = "database-migrator"

# Connection failures that waiting will not fix: fail at once instead of retrying.
_PERMANENT_CONNECT_FAILURES = (
    "password authentication failed",
    "authentication failed",
    "does not exist",
    "no pg_hba.conf entry",
    "permission denied",
    "invalid connection option",
    "invalid sslmode",
    "invalid uri",
    "invalid integer value",
    "missing \"=\"",
    "does not support ssl",
    "certificate",
)

_COLUMNS = {
    "checksum": "text",
    "file_digest": "text",
    "applied_at": "timestamptz DEFAULT now()",
    "execution_ms": "integer",
    "applied_by": "text DEFAULT current_user",
}


@dataclass(frozen=True)
class AppliedRow:
    """One row of the tracking table. Rows written by the old run-migrations.sh (or by a
    migration inserting its own version) have no checksum yet."""

    version: str
    checksum: str | None
    file_digest: str | None
    applied_at: datetime | None
    execution_ms: int | None
    applied_by: str | None


@dataclass
class TimeBudget:
    """The time a run may still use (a Lambda invocation's). Every statement's timeout is capped
    so that none runs into the last ``margin_seconds`` before the deadline: no statement outlives
    the invocation, and there is time left to roll back and answer."""

    deadline: float  # time.monotonic() value
    margin_seconds: float
    configured_ms: int  # the session's statement_timeout before capping (0: none)
    current_ms: int = 0  # what the session has now, once capped (0: not capped yet)

    def seconds_left(self) -> float:
        """Statement time left: up to the deadline less the margin."""
        return self.deadline - self.margin_seconds - time.monotonic()

    def cap(self, connection: psycopg.Connection[tuple[object, ...]]) -> None:
        """Lower the session's statement_timeout to the time left, when that is the smaller;
        a round trip only near the end of the budget."""
        left_ms = max(1, int(self.seconds_left() * 1000))
        wanted = left_ms if self.configured_ms == 0 else min(self.configured_ms, left_ms)
        if wanted < (self.current_ms or self.configured_ms or wanted + 1):
            connection.execute("SELECT set_config('statement_timeout', %s, false)", (f"{wanted}ms",))
            self.current_ms = wanted

    @property
    def capped(self) -> bool:
        return self.current_ms != 0 and (self.configured_ms == 0 or self.current_ms < self.configured_ms)


def time_budget(
    connection: psycopg.Connection[tuple[object, ...]], deadline: float, margin_seconds: float
) -> TimeBudget:
    row = connection.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'statement_timeout'").fetchone()
    return TimeBudget(deadline, margin_seconds, int(row[0]) if row else 0)  # type: ignore[call-overload]


@dataclass(frozen=True)
class ConnectSettings:
    conninfo: str  # URI or key=value; empty means libpq environment variables (PGHOST...)
    total_timeout_seconds: float
    attempt_timeout_seconds: int = 10
    lock_timeout: str = "5s"
    statement_timeout: str = "10min"


def connect(settings: ConnectSettings, emit: EventSink) -> psycopg.Connection[tuple[object, ...]]:
    """Connect, retrying with capped exponential backoff and jitter until the total timeout:
    an Aurora cluster resuming from auto-pause, or a server still starting, takes seconds."""
    secret = password_of(settings.conninfo)
    emit(Connecting(redact_conninfo(settings.conninfo) if settings.conninfo else "(libpq environment)"))
    deadline = time.monotonic() + settings.total_timeout_seconds
    attempt = 0
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        try:
            connection = psycopg.connect(
                settings.conninfo,
                autocommit=True,
                connect_timeout=max(2, min(settings.attempt_timeout_seconds, int(remaining) + 1)),
                application_name=APPLICATION_NAME,
            )
            break
        except psycopg.OperationalError as error:
            reason = scrub(str(error).strip(), secret)
            permanent = any(text in reason.lower() for text in _PERMANENT_CONNECT_FAILURES)
            delay = min(5.0, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            if permanent or time.monotonic() + delay > deadline:
                waited = "" if permanent else f" after {attempt} attempts"
                raise ConnectionFailedError(f"could not connect{waited}: {reason}") from None
            emit(ConnectRetry(attempt, round(delay, 2), reason.splitlines()[0]))
            time.sleep(delay)
    try:
        connection.execute(
            "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
            (settings.lock_timeout, settings.statement_timeout),
        )
    except psycopg.Error as error:
        connection.close()
        raise MigrationError(f"invalid lock/statement timeout: {error.diag.message_primary}") from None
    emit(Connected(server_version(connection)))
    return connection


def server_version(connection: psycopg.Connection[tuple[object, ...]]) -> str:
    number = connection.info.server_version
    return f"{number // 10000}.{number % 10000}"


@contextmanager
def runner_lock(
    connection: psycopg.Connection[tuple[object, ...]], wait_seconds: float, emit: EventSink
) -> Iterator[None]:
    """Hold the session advisory lock that serialises runners. A session lock disappears with
    its connection, so a killed runner can never leave it stuck."""
    acquired = connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
    if not (acquired and acquired[0]):
        emit(WaitingForLock(_lock_holder(connection)))
        previous = connection.execute("SELECT current_setting('lock_timeout'), current_setting('statement_timeout')")
        saved = previous.fetchone()
        # Wait up to wait_seconds for the lock, and only for the lock: statement_timeout is for migrations.
        connection.execute(
            "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', '0', false)",
            (f"{int(wait_seconds * 1000)}ms",),
        )
        try:
            connection.execute("SELECT pg_advisory_lock(%s)", (ADVISORY_LOCK_KEY,))
        except pg_errors.LockNotAvailable:
            raise LockTimeoutError(
                f"another migration run still holds the lock after {wait_seconds:g}s "
                f"({_lock_holder(connection)}); nothing was applied"
            ) from None
        finally:
            if saved:
                connection.execute(
                    "SELECT set_config('lock_timeout', %s, false), set_config('statement_timeout', %s, false)",
                    saved,
                )
    try:
        yield
    finally:
        if not connection.closed:
            connection.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def _lock_holder(connection: psycopg.Connection[tuple[object, ...]]) -> str:
    row = connection.execute(
        """SELECT a.pid, a.application_name, a.client_addr::text, a.backend_start
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.locktype = 'advisory' AND l.granted
              AND (l.classid::bigint << 32) | l.objid::bigint = %s::bigint""",
        (ADVISORY_LOCK_KEY,),
    ).fetchone()
    if row is None:
        return "holder unknown"
    pid, application, address, started = row
    return f"held by pid {pid}, application {application or '?'}, from {address or 'local socket'}, since {started}"


def tracking_table_exists(connection: psycopg.Connection[tuple[object, ...]]) -> bool:
    row = connection.execute("SELECT to_regclass(%s) IS NOT NULL", (TRACKING_TABLE,)).fetchone()
    return bool(row and row[0])


def ensure_tracking_table(connection: psycopg.Connection[tuple[object, ...]], emit: EventSink) -> None:
    """Create the tracking table, or adopt the old runner's (version only) by adding what is
    missing. DDL runs only when something is missing: an ALTER on every deploy would queue
    behind the application's queries."""
    if not tracking_table_exists(connection):
        columns = ", ".join(f"{name} {kind}" for name, kind in _COLUMNS.items())
        connection.execute(f"CREATE TABLE IF NOT EXISTS {TRACKING_TABLE} (version text PRIMARY KEY, {columns})")
        emit(TrackingTableReady("created"))
        return
    present = _tracking_columns(connection)
    if "version" not in present:
        raise MigrationError(f"table {TRACKING_TABLE} exists but has no 'version' column: not a migration table")
    missing = [f"ADD COLUMN {name} {kind}" for name, kind in _COLUMNS.items() if name not in present]
    unique = connection.execute(
        """SELECT 1 FROM pg_index i JOIN pg_attribute a
                ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
            WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indnkeyatts = 1
              AND a.attname = 'version'""",
        (TRACKING_TABLE,),
    ).fetchone()
    if not missing and unique:
        emit(TrackingTableReady("ready"))
        return
    with connection.transaction():
        if missing:
            connection.execute(f"ALTER TABLE {TRACKING_TABLE} {', '.join(missing)}")
        if not unique:
            try:
                connection.execute(f"ALTER TABLE {TRACKING_TABLE} ADD UNIQUE (version)")
            except (pg_errors.UniqueViolation, pg_errors.NotNullViolation) as error:
                raise MigrationError(
                    f"cannot adopt {TRACKING_TABLE}: its version column has duplicate values "
                    f"({error.diag.message_detail or error.diag.message_primary}); remove them first"
                ) from None
    emit(TrackingTableReady("upgraded"))


def applied_rows(connection: psycopg.Connection[tuple[object, ...]]) -> dict[str, AppliedRow]:
    """Read the tracking table, also in the old runner's shape (columns it lacks read as NULL)."""
    present = _tracking_columns(connection)
    wanted = ("checksum", "file_digest", "applied_at::timestamptz", "execution_ms", "applied_by")
    select = ", ".join(column if column.split("::")[0] in present else "NULL" for column in wanted)
    rows = connection.execute(
        f"SELECT version::text, {select} FROM {TRACKING_TABLE} WHERE version IS NOT NULL"
    ).fetchall()
    return {str(row[0]): AppliedRow(*row) for row in rows}  # type: ignore[arg-type]


def _tracking_columns(connection: psycopg.Connection[tuple[object, ...]]) -> set[str]:
    return {
        str(row[0])
        for row in connection.execute(
            """SELECT attname FROM pg_attribute
                WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped""",
            (TRACKING_TABLE,),
        )
    }


def record_checksum(
    connection: psycopg.Connection[tuple[object, ...]], version: str, checksum: str, digest: str
) -> None:
    connection.execute(
        f"UPDATE {TRACKING_TABLE} SET checksum = %s, file_digest = %s WHERE version = %s",
        (checksum, digest, version),
    )


def apply_migration(
    connection: psycopg.Connection[tuple[object, ...]],
    *,
    version: str,
    path: str,
    migration: ParsedMigration,
    digest: str,
    applied_by: str,
    budget: TimeBudget | None = None,
) -> int:
    """Run one migration and write its tracking row; return its duration in milliseconds.

    In a transaction (the default) the SQL and the row commit together or not at all. A file
    marked no-transaction runs statement by statement and is recorded once all succeeded.
    With a time budget, each statement's timeout is capped by the time left.
    """
    started = time.perf_counter()
    try:
        if migration.in_transaction:
            with connection.transaction():
                _execute_all(connection, version, path, migration, budget)
                elapsed = _elapsed_ms(started)
                _write_row(connection, version, migration.checksum, digest, elapsed, applied_by)
        else:
            _execute_all(connection, version, path, migration, budget)
            elapsed = _elapsed_ms(started)
            _write_row(connection, version, migration.checksum, digest, elapsed, applied_by)
    except psycopg.OperationalError as error:  # the connection itself broke mid-migration
        if not connection.closed and not connection.broken:
            raise
        raise MigrationFailedError(
            f"{path}: {version}: lost the database connection ({str(error).strip()}); "
            "its transaction was rolled back by the server",
            version=version,
            path=path,
            line=None,
            sqlstate=None,
        ) from None
    return elapsed


def _execute_all(
    connection: psycopg.Connection[tuple[object, ...]],
    version: str,
    path: str,
    migration: ParsedMigration,
    budget: TimeBudget | None = None,
) -> None:
    with connection.cursor() as cursor:
        for index, statement in enumerate(migration.statements):
            try:
                if budget is not None:
                    budget.cap(connection)
                cursor.execute(statement.sql.encode("utf-8"))
            except psycopg.DatabaseError as error:
                if isinstance(error, psycopg.OperationalError) and connection.broken:
                    raise
                diag = error.diag
                line = statement.line
                if diag.statement_position:
                    offset = int(diag.statement_position) - 1
                    line += statement.sql.count("\n", 0, offset)
                text = f"{path}:{line}: {version} failed: SQLSTATE {diag.sqlstate}: {diag.message_primary}"
                for label, value in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint),
                                     ("CONTEXT", diag.context)):
                    if value:
                        text += f"\n  {label}: {value}"
                if budget is not None and budget.capped and diag.sqlstate == "57014":
                    text += (
                        f"\n  the statement was stopped after {budget.current_ms / 1000:g}s, the time this run had "
                        "left: a longer migration needs a longer function timeout, or to run outside a deploy."
                    )
                if migration.in_transaction:
                    text += f"\n  {version} was rolled back completely; no later migration ran."
                else:
                    done = f"statements 1-{index} of {len(migration.statements)} stay applied" if index else (
                        "none of its statements took effect"
                    )
                    text += (
                        f"\n  {version} runs without a transaction: {done}, it is not recorded, and the "
                        "next run starts it again from its first statement."
                    )
                raise MigrationFailedError(
                    text, version=version, path=path, line=line, sqlstate=diag.sqlstate
                ) from None


def _write_row(
    connection: psycopg.Connection[tuple[object, ...]],
    version: str,
    checksum: str,
    digest: str,
    elapsed_ms: int,
    applied_by: str,
) -> None:
    # ON CONFLICT: a migration may insert its own version, as the guide's template does.
    connection.execute(
        f"""INSERT INTO {TRACKING_TABLE} (version, checksum, file_digest, applied_at, execution_ms, applied_by)
            VALUES (%s, %s, %s, now(), %s, %s)
            ON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum,
                file_digest = EXCLUDED.file_digest, applied_at = EXCLUDED.applied_at,
                execution_ms = EXCLUDED.execution_ms, applied_by = EXCLUDED.applied_by""",
        (version, checksum, digest, elapsed_ms, applied_by),
    )


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
