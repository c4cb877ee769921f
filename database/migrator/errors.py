"""Errors the runner raises: each carries a message a person can act on."""

from __future__ import annotations


class MigrationError(Exception):
    """Base class: something stopped the run; `str(error)` says what and where."""

    exit_code = 1


class InvalidMigrationError(MigrationError):
    """A migration file or directory is malformed; found before the database is touched."""

    exit_code = 2


class ConnectionFailedError(MigrationError):
    """The database could not be reached within the connect timeout."""

    exit_code = 3


class LockTimeoutError(MigrationError):
    """Another runner held the migration lock for longer than we were willing to wait."""

    exit_code = 4


class DriftError(MigrationError):
    """Applied migrations whose files changed since they ran (and were not accepted)."""


class MigrationFailedError(MigrationError):
    """A migration's SQL failed; it was rolled back and nothing after it ran."""

    def __init__(
        self,
        message: str,
        *,
        version: str,
        path: str,
        line: int | None,
        sqlstate: str | None,
    ) -> None:
        super().__init__(message)
        self.version = version
        self.path = path
        self.line = line
        self.sqlstate = sqlstate


class OutOfTimeError(MigrationError):
    """The run's time budget (a Lambda invocation's remaining time) ran short between migrations:
    it stopped cleanly before the next one instead of being killed in the middle of it."""

    exit_code = 5

    def __init__(self, message: str, *, applied: int, total: int) -> None:
        super().__init__(message)
        self.applied = applied
        self.total = total


class RunInterruptedError(MigrationError):
    """The run was interrupted (Ctrl-C, SIGINT); `str(error)` says what was rolled back."""

    exit_code = 130  # 128 + SIGINT, what shells report for a process stopped by Ctrl-C
