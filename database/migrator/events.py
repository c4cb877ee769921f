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
    | Notice
    | ServerMessage
    | SchemaDrift
)
EventSink = Callable[[Event], None]


def ignore_events(_event: Event) -> None:
    """An event sink for callers that only want the returned result."""
