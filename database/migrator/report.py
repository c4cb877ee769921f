"""A Status as plain JSON-ready data and back, for a status read in one place and shown in another:
the deploy-time function reads it inside the VPC, the CLI renders it on a laptop. The field names
are the CLI's --json document's."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import MigrationError
from .orchestration import AppliedMigration, PendingMigration, Status


class ReportError(MigrationError):
    """A status document that does not have the expected shape (a mismatched function version?)."""


def status_to_dict(status: Status, root: Path | None = None) -> dict[str, Any]:
    """``status`` as JSON-ready data; pending paths relative to ``root`` when they lie under it
    (``database/migrations/004_x.sql`` rather than the function's /var/task/...)."""
    return {
        "applied": [
            {
                "version": item.version,
                "applied_at": item.applied_at.isoformat() if item.applied_at else None,
                "execution_ms": item.execution_ms,
                "applied_by": item.applied_by,
                "baselined": item.baselined,
            }
            for item in status.applied
        ],
        "pending": [
            {
                "version": item.version,
                "path": _relative(item.path, root),
                "statements": item.statements,
                "in_transaction": item.in_transaction,
                "out_of_order": item.out_of_order,
            }
            for item in status.pending
        ],
        "drifted": list(status.drifted),
        "missing": list(status.missing),
        "unverified": list(status.unverified),
        "tracking_table_exists": status.tracking_table_exists,
        "problems": [problem.replace(f"{root}/", "") if root else problem for problem in status.problems],
        "invalid_indexes": list(status.invalid_indexes),
        "schema_drift": list(status.schema_drift),
        "repeatable_pending": list(status.repeatable_pending),
        "schema_recorded_at": status.schema_recorded_at.isoformat() if status.schema_recorded_at else None,
    }


def status_from_dict(document: dict[str, Any]) -> Status:
    """The Status ``status_to_dict`` described; raises ReportError naming the first bad field."""
    try:
        return Status(
            applied=[
                AppliedMigration(
                    version=str(item["version"]),
                    applied_at=_optional_datetime(item["applied_at"]),
                    execution_ms=_optional_int(item["execution_ms"]),
                    applied_by=item["applied_by"],
                )
                for item in document["applied"]
            ],
            pending=[
                PendingMigration(
                    version=str(item["version"]),
                    path=Path(item["path"]),
                    statements=int(item["statements"]),
                    in_transaction=bool(item["in_transaction"]),
                    out_of_order=bool(item["out_of_order"]),
                )
                for item in document["pending"]
            ],
            drifted=[str(version) for version in document["drifted"]],
            missing=[str(version) for version in document["missing"]],
            unverified=[str(version) for version in document["unverified"]],
            tracking_table_exists=bool(document.get("tracking_table_exists", True)),
            problems=[str(problem) for problem in document.get("problems", [])],
            invalid_indexes=[str(index) for index in document.get("invalid_indexes", [])],
            schema_drift=[str(change) for change in document.get("schema_drift", [])],
            repeatable_pending=[str(name) for name in document.get("repeatable_pending", [])],
            schema_recorded_at=_optional_datetime(document.get("schema_recorded_at")),
        )
    except KeyError as error:
        raise ReportError(f"status document: missing field {error}") from None
    except (TypeError, ValueError) as error:
        raise ReportError(f"status document: bad value ({error})") from None


def _relative(path: Path, root: Path | None) -> str:
    if root is not None and path.is_relative_to(root):
        return PurePosixPath(path.relative_to(root)).as_posix()
    return str(path)


def _optional_datetime(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _optional_int(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]
