"""What the runner reports while it works. The core emits these; callers decide how to show
them (the CLI as the guide's log lines or JSON, the Lambda as log records)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .orchestration import Status


@dataclass(frozen=True)
class Connecting:
    target: str  # already redacted: never contains a password


@dataclass(frozen=True)
class ConnectRetry:
    attempt: int
    delay_seconds: float
    reason: str


@dataclass(frozen=True)
class Connected:
    server_version: str


@dataclass(frozen=True)
class WaitingForLock:
    holder: str


@dataclass(frozen=True)
class TrackingTableReady:
    action: str  # "created", "upgraded" (adopted from the old runner) or "ready"


@dataclass(frozen=True)
class Planned:
    status: Status  # computed under the lock, before anything is applied


@dataclass(frozen=True)
class Applying:
    version: str
    in_transaction: bool


@dataclass(frozen=True)
class Applied:
    version: str
    milliseconds: int


@dataclass(frozen=True)
class Blocker:
    """A session a waiting migration statement queues behind: who it is, never what it runs."""

    pid: int
    user: str | None
    application_name: str | None
    state: str | None  # None: not visible to this role (pg_read_all_stats shows it)
    transaction_seconds: float | None  # how long its transaction has been open

    def describe(self) -> str:
        details = [f"user {self.user or '?'}"]
        if self.application_name:
            details.append(f"application {self.application_name}")
        details.append(self.state or "state not visible to this role")
        if self.transaction_seconds is not None:
            details.append(f"transaction open {self.transaction_seconds:.1f}s")
        return f"pid {self.pid} ({', '.join(details)})"


@dataclass(frozen=True)
class LockWait:
    """What a migration statement was last seen waiting for, and who blocked it."""

    mode: str  # the lock it asked for, e.g. AccessExclusiveLock
    target: str  # the schema-qualified table, or what else it waited for
    blockers: tuple[Blocker, ...]

    def describe(self, shown: int = 5) -> str:
        who = ", ".join(blocker.describe() for blocker in self.blockers[:shown]) or "no session any more"
        if len(self.blockers) > shown:
            who += f" and {len(self.blockers) - shown} more"
        return f"waiting for {self.mode} on {self.target}, blocked by {who}"


@dataclass(frozen=True)
class LockRetry:
    """A migration statement gave up on lock_timeout (SQLSTATE 55P03): it was rolled back (in a
    no-transaction file: that statement only) and runs again after `delay_seconds`."""

    version: str
    line: int | None  # where the statement that waited starts, when known
    attempt: int  # the attempt that failed, from 1
    attempts: int  # how many the settings allow (lock retries + 1)
    delay_seconds: float
    wait: LockWait | None  # None: the wait ended before the runner could look


@dataclass(frozen=True)
class Repeating:
    """A repeatable migration (R__*.sql), new or changed, starts."""

    name: str


@dataclass(frozen=True)
class Repeated:
    name: str
    milliseconds: int


@dataclass(frozen=True)
class Reverting:
    """A rollback starts running a migration's undo file."""

    version: str
    in_transaction: bool


@dataclass(frozen=True)
class Reverted:
    """A migration's undo ran and its tracking row is gone."""

    version: str
    milliseconds: int


@dataclass(frozen=True)
class Notice:
    message: str


@dataclass(frozen=True)
class ServerMessage:
    """A NOTICE or WARNING the server sent while a migration ran (RAISE NOTICE, "already exists, skipping")."""

    version: str
    severity: str  # NOTICE, WARNING, INFO, ...
    message: str


@dataclass(frozen=True)
class SchemaDrift:
    """The live schema differs from the one the last apply recorded (changed outside migrations)."""

    changes: list[str]  # one line per object: "index public.idx_users_phone_tmp added"


Event = (
    Connecting
    | ConnectRetry
    | Connected
    | WaitingForLock
    | TrackingTableReady
    | Planned
    | Applying
    | Applied
    | LockRetry
    | Reverting
    | Reverted
    | Repeating
    | Repeated
    | Notice
    | ServerMessage
    | SchemaDrift
)
EventSink = Callable[[Event], None]


def ignore_events(_event: Event) -> None:
    """An event sink for callers that only want the returned result."""
