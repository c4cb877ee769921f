"""Lock-safe execution: a migration statement that gives up on lock_timeout (SQLSTATE 55P03) is
rolled back and tried again after an exponential, jittered backoff, and every wait names the
sessions that blocked it.

Who blocks a statement can only be seen while it waits: once lock_timeout fires, its lock request
is gone from pg_locks and the error does not say which lock it was. So a watcher thread, with a
second connection of its own, looks at the runner's session whenever a statement has been running
for a quarter of lock_timeout: if it waits for a lock, it records the lock and the sessions
pg_blocking_pids names (from pg_stat_activity: pid, user, application, state, transaction age;
never their query text). That is reliable (a statement that times out has waited a whole
lock_timeout, long enough for several looks) and cheap: per statement the runner stores two
numbers; the watcher wakes four times per lock_timeout (at most once a second) and opens its
connection only when a statement runs that long.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar, cast

from .errors import MigrationFailedError
from .events import Blocker, EventSink, LockRetry, LockWait

if TYPE_CHECKING:
    import psycopg

    from .postgres import TimeBudget

LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout expired (or NOWAIT found the lock taken)

T = TypeVar("T")


@dataclass(frozen=True)
class Backoff:
    """The waits between attempts: exponential from `first_seconds`, at most `max_seconds`, each
    jittered (x0.5 to x1.5) so that a runner and a periodic blocker do not keep meeting; no attempt
    starts later than `window_seconds` after the first one (the bound on the total time)."""

    first_seconds: float = 0.5
    max_seconds: float = 15.0
    window_seconds: float = 120.0

    def delay(self, failed_attempts: int) -> float:
        exponential = self.first_seconds * 2.0 ** (failed_attempts - 1)
        return min(self.max_seconds, exponential * random.uniform(0.5, 1.5))


class LockRetries:
    """Runs a migration, or one statement of a no-transaction file, again while it fails on a lock
    timeout, within the retries, the window and the run's time budget."""

    def __init__(
        self, retries: int, backoff: Backoff, watch: BlockerWatch, budget: TimeBudget | None, emit: EventSink
    ) -> None:
        self.retries = retries
        self._backoff = backoff
        self._watch = watch
        self._budget = budget
        self._emit = emit

    def run(self, attempt: Callable[[], T], version: str, before_retry: Callable[[], None] | None = None) -> T:
        """`attempt()`'s result; it must leave nothing behind when it raises (roll back).
        `before_retry` clears what a failed attempt cannot roll back (an INVALID index)."""
        started = time.monotonic()
        number = 0
        while True:
            number += 1
            serial = self._watch.begin()
            try:
                return attempt()
            except MigrationFailedError as failure:
                if failure.sqlstate != LOCK_NOT_AVAILABLE:
                    raise
                wait = self._watch.outcome(serial)
                delay = self._backoff.delay(number)
                stop = self._why_stop(number, started, delay)
                if stop is not None:
                    raise _gave_up(failure, wait, stop) from None
                self._emit(LockRetry(version, failure.line, number, self.retries + 1, round(delay, 2), wait))
                time.sleep(delay)
                if before_retry is not None:
                    before_retry()
            finally:
                self._watch.end()

    def _why_stop(self, failed: int, started: float, delay: float) -> str | None:
        """Why no further attempt may start after `delay`, or None when one may."""
        spent = time.monotonic() - started
        tried = f"Tried {failed} time{'s' if failed > 1 else ''} in {spent:.1f}s"
        if self.retries == 0:
            return "Lock retries are off (0)"
        if failed > self.retries:
            return f"{tried} ({self.retries} lock retr{'ies' if self.retries > 1 else 'y'})"
        if spent + delay > self._backoff.window_seconds:
            return f"{tried}; another attempt would start after the {self._backoff.window_seconds:g}s retry window"
        budget = self._budget
        if budget is not None and budget.seconds_left() - delay < budget.margin_seconds + self._watch.lock_timeout:
            return f"{tried}; this run's time budget leaves no room for another attempt"
        return None


def _gave_up(failure: MigrationFailedError, wait: LockWait | None, stop: str) -> MigrationFailedError:
    """The lock timeout's failure, with what it waited for and who blocked it."""
    if wait is None:
        seen = "Who blocked it was not seen (the wait ended before the runner could look)."
    else:
        seen = f"Lock timeout {wait.describe()}."
    text = (
        f"{failure}\n  {seen}\n  {stop}. The blocking sessions were left alone: apply again once they are done "
        "(or end them)."
    )
    return MigrationFailedError(
        text, version=failure.version, path=failure.path, line=failure.line, sqlstate=failure.sqlstate
    )


# The lock the runner's session waits for, and who blocks it. A row lock (transactionid) names
# no table: the tuple lock the waiter holds meanwhile does. Never selects a query's text.
_WAIT_SQL = """
SELECT l.mode, l.locktype,
       (SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname)
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE c.oid = coalesce(l.relation, (SELECT t.relation FROM pg_locks t
                                              WHERE t.pid = l.pid AND t.locktype = 'tuple' AND t.granted
                                              LIMIT 1))),
       b.pid, b.usename::text, b.application_name, b.state,
       extract(epoch FROM clock_timestamp() - b.xact_start)::float8
  FROM pg_locks l
  LEFT JOIN LATERAL unnest(pg_blocking_pids(l.pid)) AS blocker(pid) ON true
  LEFT JOIN pg_stat_activity b ON b.pid = blocker.pid
 WHERE l.pid = %s AND NOT l.granted
 ORDER BY b.xact_start NULLS LAST, b.pid
"""
# A row of _WAIT_SQL: mode, locktype, table, then the blocker (NULLs when there is none).
_WaitRow = tuple[str, str, str | None, int | None, str | None, str | None, str | None, float | None]
_OTHER_TARGETS = {
    "transactionid": "a row another transaction changed",
    "virtualxid": "another transaction to end",
}


class BlockerWatch:
    """Looks, from a second connection, at what the runner's session waits for while a statement
    runs long (see the module's docstring). `begin`/`end` bracket each attempt; `outcome` is what
    was last seen during one."""

    def __init__(self, conninfo: str, application_name: str, runner_pid: int, lock_timeout_ms: int) -> None:
        self.lock_timeout = lock_timeout_ms / 1000  # seconds; 0: none (only NOWAIT gives 55P03)
        self._poll = min(1.0, max(0.01, self.lock_timeout / 4)) if lock_timeout_ms else 1.0
        self._conninfo = conninfo
        self._application_name = application_name
        self._pid = runner_pid
        self._serial = 0
        self._current: tuple[int, float] | None = None  # (attempt serial, started), while one runs
        self._last: tuple[int, LockWait] | None = None  # (attempt serial, what it waited for)
        self._looking = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="migration-lock-watch", daemon=True)
        self._thread.start()

    def begin(self) -> int:
        self._serial += 1
        self._current = (self._serial, time.monotonic())
        return self._serial

    def end(self) -> None:
        self._current = None

    def outcome(self, serial: int) -> LockWait | None:
        """What attempt `serial` was last seen waiting for; a look in progress finishes first."""
        self._current = None
        with self._looking:
            last = self._last
        return last[1] if last is not None and last[0] == serial else None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)  # at most a look in progress (its statement_timeout is 2 s)

    def _watch(self) -> None:
        import psycopg

        monitor: psycopg.Connection[tuple[object, ...]] | None = None
        try:
            while not self._stop.wait(self._poll):
                current = self._current
                if current is None or time.monotonic() - current[1] < self._poll:
                    continue
                with self._looking:
                    if self._current is not current:
                        continue
                    try:
                        if monitor is None:
                            monitor = self._connect()
                        wait = self._look(monitor)
                    except psycopg.Error:  # no look this time: the failure message says so if it matters
                        if monitor is not None:
                            monitor.close()
                        monitor = None
                        continue
                    if wait is not None:
                        self._last = (current[0], wait)
        finally:
            if monitor is not None:
                monitor.close()

    def _connect(self) -> psycopg.Connection[tuple[object, ...]]:
        import psycopg

        monitor = psycopg.connect(
            self._conninfo, autocommit=True, connect_timeout=5, application_name=self._application_name
        )
        monitor.execute("SELECT set_config('statement_timeout', '2s', false), set_config('lock_timeout', '1s', false)")
        return monitor

    def _look(self, monitor: psycopg.Connection[tuple[object, ...]]) -> LockWait | None:
        """What the runner's session waits for now, or None when it waits for no lock. The cheap
        pg_stat_activity check comes first: pg_locks and pg_blocking_pids lock the lock manager."""
        row = monitor.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (self._pid,)
        ).fetchone()
        if not (row and row[0]):
            return None
        rows = monitor.execute(_WAIT_SQL, (self._pid,)).fetchall()
        if not rows:
            return None
        mode, locktype, table = rows[0][:3]
        blockers = tuple(
            Blocker(pid, user, application, state, None if seconds is None else round(seconds, 1))
            for *_, pid, user, application, state, seconds in cast("list[_WaitRow]", rows)
            if pid is not None
        )
        target = str(table) if table else _OTHER_TARGETS.get(str(locktype), f"a {locktype} lock")
        return LockWait(str(mode), target, blockers)


@contextmanager
def lock_retries(
    connection: psycopg.Connection[tuple[object, ...]],
    conninfo: str,
    retries: int,
    backoff: Backoff,
    budget: TimeBudget | None,
    emit: EventSink,
) -> Iterator[LockRetries]:
    """Lock retries for the migrations applied on `connection`, with a watcher for the run."""
    from .postgres import APPLICATION_NAME

    row = connection.execute("SELECT setting::integer FROM pg_settings WHERE name = 'lock_timeout'").fetchone()
    lock_timeout_ms = int(row[0]) if row else 0  # type: ignore[call-overload]
    watch = BlockerWatch(conninfo, f"{APPLICATION_NAME} lock watch", connection.info.backend_pid, lock_timeout_ms)
    try:
        yield LockRetries(retries, backoff, watch, budget, emit)
    finally:
        watch.close()
