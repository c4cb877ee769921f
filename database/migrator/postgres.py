"""Everything that speaks PostgreSQL: connecting, the runner lock, the tracking table, and
executing one migration together with its tracking row."""

from __future__ import annotations

import random
import re
import time
from bisect import bisect_right
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

import psycopg
from psycopg import errors as pg_errors
from psycopg import generators, pq

from .errors import ConnectionFailedError, LockTimeoutError, MigrationError, MigrationFailedError
from .events import (
    Connected,
    Connecting,
    ConnectRetry,
    EventSink,
    Notice,
    ServerMessage,
    TrackingTableReady,
    WaitingForLock,
    ignore_events,
)
from .parsing import ParsedMigration
from .redaction import password_of, redact_conninfo, scrub, visible_parts

if TYPE_CHECKING:
    from .lockwait import LockRetries

TRACKING_TABLE = "schema_migrations"
# Repeatable migrations (R__*.sql) are tracked apart from the versioned history: name -> checksum.
REPEATABLE_TABLE = "schema_repeatables"
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

    def statement_cap_sql(self, connection: psycopg.Connection[tuple[object, ...]]) -> str:
        """A statement that caps the next statement's timeout (in the transaction) by the time left,
        counted on the server's clock: put before each statement of a migration sent as one query,
        whose statements the server times one by one."""
        row = connection.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint").fetchone()
        server_deadline_ms = int(row[0]) + max(1, int(self.seconds_left() * 1000))  # type: ignore[index, arg-type]
        left = f"{server_deadline_ms} - (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
        if self.configured_ms:
            left = f"LEAST({self.configured_ms}, {left})"
        return f"SELECT set_config('statement_timeout', GREATEST(1, {left})::text, true);\n"

    def cut_short(self) -> bool:
        """Whether a statement timeout now is the budget's doing rather than the configured one's."""
        return self.configured_ms == 0 or self.seconds_left() * 1000 < self.configured_ms


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
            reason = scrub(str(error).strip(), secret, shown=visible_parts(settings.conninfo))
            permanent = any(text in reason.lower() for text in _PERMANENT_CONNECT_FAILURES)
            delay = min(5.0, 0.25 * 2 ** (attempt - 1)) * random.uniform(0.8, 1.2)
            if permanent or time.monotonic() + delay > deadline:
                waited = "" if permanent else f" after {attempt} attempts"
                raise ConnectionFailedError(f"could not connect{waited}: {reason}") from None
            emit(ConnectRetry(attempt, round(delay, 2), reason.splitlines()[0]))
            time.sleep(delay)
    session = {"lock_timeout": settings.lock_timeout, "statement_timeout": settings.statement_timeout}
    session |= _vanished_client_settings(connection)
    try:
        calls = ", ".join("set_config(%s, %s, false)" for _ in session)
        connection.execute(f"SELECT {calls}", [item for pair in session.items() for item in pair])
    except psycopg.Error as error:
        connection.close()
        raise MigrationError(f"invalid lock/statement timeout: {error.diag.message_primary}") from None
    emit(Connected(server_version(connection)))
    return connection


# How soon the server notices that a runner's process or machine is gone. A killed runner's
# session would otherwise keep running its statement, and holding the runner lock, for up to
# statement_timeout.
CLIENT_CHECK_INTERVAL = "1s"  # the process died: its socket is closed (PostgreSQL 14+)
_SERVER_KEEPALIVES = {  # the machine vanished: nothing closes the socket (about 60 s)
    "tcp_keepalives_idle": "30",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "3",
}


def _vanished_client_settings(connection: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    """Session settings that make the server end this session soon after its client vanishes,
    even mid-statement. All are ordinary user settings; TCP keepalives are ignored on Unix sockets."""
    settings = dict(_SERVER_KEEPALIVES)
    if connection.info.server_version >= 140000:
        settings["client_connection_check_interval"] = CLIENT_CHECK_INTERVAL
    return settings


def server_version(connection: psycopg.Connection[tuple[object, ...]]) -> str:
    number = connection.info.server_version
    return f"{number // 10000}.{number % 10000}"


# Waiting for another runner's lock: how often to try again (doubling up to the maximum).
_LOCK_POLL_FIRST_SECONDS = 0.05
_LOCK_POLL_MAX_SECONDS = 0.5


@contextmanager
def runner_lock(
    connection: psycopg.Connection[tuple[object, ...]], wait_seconds: float, emit: EventSink
) -> Iterator[None]:
    """Hold the session advisory lock that serialises runners. A session lock disappears with
    its connection, so a killed runner can never leave it stuck.

    A waiting runner polls pg_try_advisory_lock between short sleeps instead of blocking in
    pg_advisory_lock: a blocked statement holds a snapshot for as long as it waits, and the lock
    holder's CREATE INDEX CONCURRENTLY waits for every older snapshot, which deadlocks the two.
    """
    if not _try_lock(connection):
        emit(WaitingForLock(_lock_holder(connection)))
        deadline = time.monotonic() + wait_seconds
        pause = _LOCK_POLL_FIRST_SECONDS
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LockTimeoutError(
                    f"another migration run still holds the lock after {wait_seconds:g}s "
                    f"({_lock_holder(connection)}); nothing was applied"
                )
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, _LOCK_POLL_MAX_SECONDS)
            if _try_lock(connection):
                break
    try:
        yield
    finally:
        if not connection.closed and not connection.broken:
            connection.execute("SELECT pg_advisory_unlock(%s)", (ADVISORY_LOCK_KEY,))


def defer_commit_flush(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    """Commit each migration without waiting for the disk; flush_commits then makes all of them
    durable with one flush. Each migration still commits on its own, its SQL and tracking row
    together; only the WAL flush (an fsync per commit, most of a small migration's cost on many
    disks) is shared. The server replays WAL in order, so even a machine crash in between leaves
    a prefix of the run's migrations, each whole, which the next run continues."""
    connection.execute("SET synchronous_commit = off")


def flush_commits(connection: psycopg.Connection[tuple[object, ...]], last_applied: str | None) -> None:
    """Make every migration committed since defer_commit_flush durable before the run reports.

    With synchronous_commit on, a commit waits for its WAL flush, which covers every commit
    before it; only a commit that wrote something waits, so the last applied migration's tracking
    row is rewritten unchanged. Not RESET: a role or database that sets it off would keep it off;
    on in that case, the session's own default otherwise (remote_apply stays remote_apply).
    """
    if connection.closed or connection.broken:
        return  # the server ends the session; its WAL writer flushes those commits within a second
    connection.execute(
        "SELECT set_config('synchronous_commit', CASE reset_val WHEN 'off' THEN 'on' ELSE reset_val END, false) "
        "FROM pg_settings WHERE name = 'synchronous_commit'"
    )
    if last_applied is not None:
        connection.execute(f"UPDATE {TRACKING_TABLE} SET version = version WHERE version = %s", (last_applied,))


def _try_lock(connection: psycopg.Connection[tuple[object, ...]]) -> bool:
    acquired = connection.execute("SELECT pg_try_advisory_lock(%s)", (ADVISORY_LOCK_KEY,)).fetchone()
    return bool(acquired and acquired[0])


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


def repeatable_checksums(connection: psycopg.Connection[tuple[object, ...]]) -> dict[str, str]:
    """The checksum each repeatable migration was last applied with (none: the table is absent)."""
    if connection.execute("SELECT to_regclass(%s)", (REPEATABLE_TABLE,)).fetchone() == (None,):
        return {}
    rows = connection.execute(f"SELECT name, checksum FROM {REPEATABLE_TABLE}").fetchall()
    return {str(name): str(checksum) for name, checksum in rows}


def apply_repeatable(
    connection: psycopg.Connection[tuple[object, ...]],
    *,
    name: str,
    path: str,
    migration: ParsedMigration,
    applied_by: str,
    locks: LockRetries,
    emit: EventSink = ignore_events,
    budget: TimeBudget | None = None,
) -> int:
    """Run a repeatable migration and record its checksum, in one transaction; return ms."""
    connection.execute(
        f"CREATE TABLE IF NOT EXISTS {REPEATABLE_TABLE} (name text PRIMARY KEY, checksum text NOT NULL, "
        "applied_at timestamptz NOT NULL, execution_ms integer, applied_by text)"
    )
    row = (
        f"INSERT INTO {REPEATABLE_TABLE} (name, checksum, applied_at, execution_ms, applied_by) VALUES "
        f"({_literal(name)}, {_literal(migration.checksum)}, now(), {_SERVER_DURATION}, {_literal(applied_by)})\n"
        "ON CONFLICT (name) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = EXCLUDED.applied_at,\n"
        "    execution_ms = EXCLUDED.execution_ms, applied_by = EXCLUDED.applied_by\nRETURNING execution_ms"
    )
    with _server_messages(connection, name, emit):
        return int(locks.run(partial(_apply_in_transaction, connection, name, path, migration, row, budget), name))


@contextmanager
def _server_messages(
    connection: psycopg.Connection[tuple[object, ...]], version: str, emit: EventSink
) -> Iterator[None]:
    """While `version` runs, the NOTICE/WARNING messages the server sends become ServerMessage events."""

    def forward(diagnostic: psycopg.errors.Diagnostic) -> None:
        emit(ServerMessage(version, diagnostic.severity or "NOTICE", diagnostic.message_primary or ""))

    connection.add_notice_handler(forward)
    try:
        yield
    finally:
        connection.remove_notice_handler(forward)


def record_baseline(
    connection: psycopg.Connection[tuple[object, ...]], version: str, checksum: str, digest: str, applied_by: str
) -> None:
    """A tracking row for a migration adopted as applied without running (no duration: it never ran)."""
    connection.execute(
        f"INSERT INTO {TRACKING_TABLE} (version, checksum, file_digest, applied_at, execution_ms, applied_by) "
        "VALUES (%s, %s, %s, now(), NULL, %s) ON CONFLICT (version) DO NOTHING",
        (version, checksum, digest, applied_by),
    )


def apply_migration(
    connection: psycopg.Connection[tuple[object, ...]],
    *,
    version: str,
    path: str,
    migration: ParsedMigration,
    digest: str,
    applied_by: str,
    locks: LockRetries,
    emit: EventSink = ignore_events,
    budget: TimeBudget | None = None,
) -> int:
    """Run one migration and write its tracking row; return its duration in milliseconds.

    In a transaction (the default) the SQL and the row commit together or not at all, sent as
    one query string: one round trip per migration instead of one per statement. A file marked
    no-transaction runs statement by statement and is recorded once all succeeded and every
    index it built concurrently is valid. NOTICE/WARNING messages are emitted as ServerMessage.
    With a time budget, every statement's timeout is capped by the time left. A lock timeout
    runs the migration again (no-transaction: the statement), as `locks` allows.
    """
    try:
        with _server_messages(connection, version, emit):
            if migration.in_transaction:
                row = _row_sql(version, migration.checksum, digest, applied_by)
                attempt = partial(_apply_in_transaction, connection, version, path, migration, row, budget)
                return locks.run(attempt, version)
            return _apply_without_transaction(
                connection, version, path, migration, digest, applied_by, emit, budget, locks
            )
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


def _apply_in_transaction(
    connection: psycopg.Connection[tuple[object, ...]],
    version: str,
    path: str,
    migration: ParsedMigration,
    row: str,
    budget: TimeBudget | None,
) -> int:
    """BEGIN, the file's statements, the tracking row's change (`row`, returning one value) and
    COMMIT in one simple-protocol query.

    The server runs the statements one by one as psql would (statement_timeout applies to
    each) and stops at the first error; the results that came back before it say which
    statement failed, the error position says where in it. With a time budget, each statement
    is preceded by one that caps its timeout by the time left.
    """
    cap = budget.statement_cap_sql(connection) if budget is not None else ""
    body = f"{_END_OF_STATEMENT}{cap}".join([statement.sql for statement in migration.statements])
    query = f"{_BEGIN}{cap}{body}{_END_OF_STATEMENT if body else ''}{row};\nCOMMIT"
    try:
        with connection.lock:
            connection.pgconn.send_query(query.encode("utf-8"))
            results = connection.wait(generators.execute(connection.pgconn))
    except BaseException:  # Ctrl-C: psycopg cancelled the query; end the transaction it left open
        _roll_back(connection)
        raise
    # The server stops at the first error: an error is the last result.
    if results[-1].status != pq.ExecStatus.FATAL_ERROR:
        return int(results[-2].get_value(0, 0) or b"0")  # the tracking row's RETURNING, before COMMIT's result
    _roll_back(connection)
    failed = len(results) - 1
    error = psycopg.errors.error_from_result(results[failed], encoding=connection.info.encoding)
    statement_index = (failed - 1) // (2 if cap else 1)  # the first result is BEGIN's
    position = error.diag.statement_position
    starts = _statement_starts(migration, cap)
    if position:
        statement_index = max(0, bisect_right(starts, int(position) - 1) - 1)
    if 0 <= statement_index < len(migration.statements):
        statement = migration.statements[statement_index]
        line = statement.line
        if position:
            line += statement.sql.count("\n", 0, int(position) - 1 - starts[statement_index])
        raise _failure(version, path, migration, error, statement_index, line, budget=budget) from None
    raise _failure(version, path, migration, error, len(migration.statements), None, budget=budget) from None


# How _apply_in_transaction frames the statements. A newline before each semicolon: a statement
# may end in a -- comment.
_BEGIN = "BEGIN;\n"
_END_OF_STATEMENT = "\n;\n"


def _statement_starts(migration: ParsedMigration, cap: str) -> list[int]:
    """Where each statement starts in _apply_in_transaction's query, in characters (as the
    server counts): only a failure needs them."""
    starts = []
    offset = len(_BEGIN) + len(cap)
    for statement in migration.statements:
        starts.append(offset)
        offset += len(statement.sql) + len(_END_OF_STATEMENT) + len(cap)
    return starts


def _roll_back(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    """End a transaction the query string left open (failed or interrupted); a broken
    connection has none left to end: the server rolls it back."""
    if connection.closed or connection.broken:
        return
    if connection.pgconn.transaction_status != pq.TransactionStatus.IDLE:
        connection.execute("ROLLBACK")


def revert_migration(
    connection: psycopg.Connection[tuple[object, ...]],
    *,
    version: str,
    path: str,
    down: ParsedMigration,
    locks: LockRetries,
    emit: EventSink = ignore_events,
) -> int:
    """Run a migration's undo file and delete its tracking row; return the duration in ms. In a
    transaction (the default) both commit together or not at all; a no-transaction undo runs
    statement by statement and the row goes when all succeeded."""
    delete = f"DELETE FROM {TRACKING_TABLE} WHERE version = {_literal(version)} RETURNING 0"
    started = time.perf_counter()
    try:
        with _server_messages(connection, version, emit):
            _run_undo(connection, version, path, down, delete, locks)
    except MigrationFailedError as error:
        raise _undo_failure(error, version, down) from None
    return _elapsed_ms(started)


def _run_undo(
    connection: psycopg.Connection[tuple[object, ...]],
    version: str,
    path: str,
    down: ParsedMigration,
    delete: str,
    locks: LockRetries,
) -> None:
    """The undo's statements and the deletion of the tracking row."""
    if down.in_transaction:
        locks.run(partial(_apply_in_transaction, connection, version, path, down, delete, None), version)
        return
    invalid_before = set(invalid_indexes(connection))
    with connection.cursor() as cursor:
        for index in range(len(down.statements)):
            attempt = partial(_execute_statement, connection, cursor, version, path, down, index, invalid_before, None)
            locks.run(attempt, version)
    connection.execute(delete)


def _undo_failure(error: MigrationFailedError, version: str, down: ParsedMigration) -> MigrationFailedError:
    """The apply's failure message, told as an undo: what stays, and that nothing older ran."""
    what = str(error).split(f"\n  {version} ", 1)[0]
    what = what.replace(f": {version} failed:", f": the undo of {version} failed:", 1)
    if down.in_transaction:
        what += f"\n  The undo was rolled back completely: {version} stays applied and nothing older was undone."
    else:
        what += (
            f"\n  The undo runs without a transaction: the statements before the failing one stay done, and {version}"
            " stays applied. Fix the undo file (safe to re-run) and roll back again."
        )
    return MigrationFailedError(what, version=error.version, path=error.path, line=error.line, sqlstate=error.sqlstate)


def _apply_without_transaction(
    connection: psycopg.Connection[tuple[object, ...]],
    version: str,
    path: str,
    migration: ParsedMigration,
    digest: str,
    applied_by: str,
    emit: EventSink,
    budget: TimeBudget | None,
    locks: LockRetries,
) -> int:
    """Statement by statement, as PostgreSQL requires for CREATE INDEX CONCURRENTLY and the like.

    A failed concurrent build leaves an INVALID index behind, and `IF NOT EXISTS` would then skip
    the build and let the file be recorded with a broken index. So an invalid index the file
    builds is dropped before the file runs, and before a build that hit a lock timeout runs again;
    the file is recorded only if every index it built is valid.
    """
    started = time.perf_counter()
    built = [index for index in (_concurrent_index(s.sql) for s in migration.statements) if index]
    for table, name in built:
        _drop_invalid_build(connection, version, table, name, "an earlier failed build", emit)
    invalid_before = set(invalid_indexes(connection))
    with connection.cursor() as cursor:
        for index, statement in enumerate(migration.statements):
            attempt = partial(
                _execute_statement, connection, cursor, version, path, migration, index, invalid_before, budget
            )
            retried_build = _concurrent_index(statement.sql)
            before_retry = None
            if retried_build is not None:
                table, name = retried_build
                left_by = "the attempt that hit the lock timeout"
                before_retry = partial(_drop_invalid_build, connection, version, table, name, left_by, emit)
            locks.run(attempt, version, before_retry)
    left = sorted(set(invalid_indexes(connection)) - invalid_before)
    left += [name for table, name in built for name in _invalid_indexes_named(connection, table, name)
             if name not in left]
    if left:
        raise MigrationFailedError(
            f"{path}: {version} failed: its statements succeeded but left INVALID index(es) "
            f"{', '.join(left)}. {version} is not recorded; the next run drops and builds "
            f"{'them' if len(left) > 1 else 'it'} again.",
            version=version,
            path=path,
            line=None,
            sqlstate=None,
        )
    elapsed = _elapsed_ms(started)
    connection.execute(_row_sql(version, migration.checksum, digest, applied_by, elapsed))
    return elapsed


def _execute_statement(
    connection: psycopg.Connection[tuple[object, ...]],
    cursor: psycopg.Cursor[tuple[object, ...]],
    version: str,
    path: str,
    migration: ParsedMigration,
    index: int,
    invalid_before: set[str],
    budget: TimeBudget | None,
) -> None:
    """Statement `index` of a no-transaction file, outside any transaction."""
    statement = migration.statements[index]
    try:
        if budget is not None:
            budget.cap(connection)
        cursor.execute(statement.sql.encode("utf-8"))
    except psycopg.DatabaseError as error:
        if isinstance(error, psycopg.OperationalError) and connection.broken:
            raise
        line = statement.line
        if error.diag.statement_position:
            line += statement.sql.count("\n", 0, int(error.diag.statement_position) - 1)
        left = sorted(set(invalid_indexes(connection)) - invalid_before)
        raise _failure(version, path, migration, error, index, line, left, budget) from None


def _drop_invalid_build(
    connection: psycopg.Connection[tuple[object, ...]], version: str, table: str, name: str, left_by: str,
    emit: EventSink,
) -> None:
    """Drop the INVALID index a failed CREATE INDEX CONCURRENTLY left, so that it is built again."""
    for invalid in _invalid_indexes_named(connection, table, name):
        emit(Notice(f"{version}: dropping the INVALID index {invalid} left by {left_by}, to build it again"))
        connection.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {invalid}")


def _failure(
    version: str,
    path: str,
    migration: ParsedMigration,
    error: psycopg.Error,
    index: int,
    line: int | None,
    invalid_left: list[str] | None = None,
    budget: TimeBudget | None = None,
) -> MigrationFailedError:
    """The error for statement `index` (len(statements): the tracking row or COMMIT) failing."""
    diag = error.diag
    where = f"{path}:{line}" if line is not None else path
    text = f"{where}: {version} failed: SQLSTATE {diag.sqlstate}: {diag.message_primary}"
    for label, value in (("DETAIL", diag.message_detail), ("HINT", diag.message_hint), ("CONTEXT", diag.context)):
        if value:
            text += f"\n  {label}: {value}"
    if budget is not None and diag.sqlstate == "57014" and budget.cut_short():
        text += (
            "\n  the statement was stopped at the end of the time this run had left: a longer migration needs "
            "a longer function timeout, or to run outside a deploy."
        )
    if migration.in_transaction:
        text += f"\n  {version} was rolled back completely; no later migration ran."
    else:
        total = len(migration.statements)
        done = f"statements 1-{index} of {total} stay applied" if index else "none of its statements took effect"
        text += (
            f"\n  {version} runs without a transaction: {done}, it is not recorded, and the "
            "next run starts it again from its first statement."
        )
        if invalid_left:
            text += (
                f"\n  It left the INVALID index(es) {', '.join(invalid_left)}; the next run drops and builds "
                f"them again (or drop them yourself: DROP INDEX CONCURRENTLY {invalid_left[0]})."
            )
    return MigrationFailedError(text, version=version, path=path, line=line, sqlstate=diag.sqlstate)


# CREATE [UNIQUE] INDEX CONCURRENTLY [IF NOT EXISTS] name ON [ONLY] table: the index a
# no-transaction statement builds (an unnamed one is caught by the invalid-index comparison).
_IDENTIFIER = r'(?:"(?:[^"]|"")+"|[^\s"(.]+)'
_CONCURRENT_INDEX = re.compile(
    rf"""^create\s+(?:unique\s+)?index\s+concurrently\s+(?:if\s+not\s+exists\s+)?
        (?P<name>{_IDENTIFIER})\s+on\s+(?:only\s+)?(?P<table>{_IDENTIFIER}(?:\.{_IDENTIFIER})?)""",
    re.IGNORECASE | re.VERBOSE,
)


def _concurrent_index(sql: str) -> tuple[str, str] | None:
    """(table as written, index name as stored) of a CREATE INDEX CONCURRENTLY, else None."""
    match = _CONCURRENT_INDEX.match(sql)
    if match is None:
        return None
    name = match["name"]
    stored = name[1:-1].replace('""', '"') if name.startswith('"') else name.lower()
    return match["table"], stored


def _invalid_indexes_named(connection: psycopg.Connection[tuple[object, ...]], table: str, name: str) -> list[str]:
    rows = connection.execute(
        """SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE NOT i.indisvalid AND i.indrelid = to_regclass(%s) AND c.relname = %s""",
        (table, name),
    ).fetchall()
    return [str(row[0]) for row in rows]


def invalid_indexes(connection: psycopg.Connection[tuple[object, ...]]) -> list[str]:
    """Indexes PostgreSQL will not use: left by a failed CREATE INDEX / REINDEX CONCURRENTLY
    (or being built concurrently right now)."""
    rows = connection.execute(
        """SELECT i.indexrelid::regclass::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE NOT i.indisvalid AND c.relnamespace <> 'pg_catalog'::regnamespace
              AND c.relnamespace <> 'pg_toast'::regnamespace
            ORDER BY 1"""
    ).fetchall()
    return [str(row[0]) for row in rows]


def _row_sql(
    version: str,
    checksum: str,
    digest: str,
    applied_by: str,
    elapsed_ms: int | None = None,
) -> str:
    """The tracking row's INSERT with its values inlined (it rides in a simple-protocol query).
    Without `elapsed_ms`, the duration is the server's time since the transaction began."""
    duration = _SERVER_DURATION if elapsed_ms is None else str(int(elapsed_ms))
    return (
        f"{_ROW_INSERT}{_literal(version)}, {_literal(checksum)}, {_literal(digest)}, now(), {duration}, "
        f"{_literal(applied_by)}){_ROW_UPSERT}"
    )


# The tracking row's INSERT around its values, built once: every migration sends one.
# ON CONFLICT: a migration may insert its own version, as the guide's template does.
_ROW_INSERT = (
    f"INSERT INTO {TRACKING_TABLE} (version, checksum, file_digest, applied_at, execution_ms, applied_by)\nVALUES ("
)
_ROW_UPSERT = (
    "\nON CONFLICT (version) DO UPDATE SET checksum = EXCLUDED.checksum, file_digest = EXCLUDED.file_digest,\n"
    "    applied_at = EXCLUDED.applied_at, execution_ms = EXCLUDED.execution_ms, applied_by = EXCLUDED.applied_by\n"
    "RETURNING execution_ms"
)
_SERVER_DURATION = "round(extract(epoch FROM clock_timestamp() - now()) * 1000)::integer"


def _literal(value: str) -> str:
    """A text literal that reads the same whatever standard_conforming_strings says (E'...'),
    built here because psycopg's sql.Literal costs more than the rest of a small migration."""
    if "\0" in value:
        raise ValueError("text values cannot contain NUL characters")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def _elapsed_ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)
