"""Where each environment's database is, for the command line: the one place that knows.

`local` is the project-local PostgreSQL that scripts/local-db.sh runs; deployed environments
are reached through an explicit URI (--db-uri or DATABASE_URL), since their credentials live in
Secrets Manager and the database sits in private subnets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from database.migrator.errors import MigrationError


class UsageError(MigrationError):
    """The command line asks for something that cannot be: wrong flag combination or value."""

    exit_code = 2

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MIGRATIONS_DIR = PROJECT_ROOT / "database" / "migrations"
LOCAL_DATABASE = "testdriven_dev"  # the guide's local database name


@dataclass(frozen=True)
class Target:
    """A resolved database to migrate, and how long to keep trying to reach it."""

    conninfo: str  # "" means: libpq environment variables (PGHOST, PGUSER, ...)
    connect_timeout_seconds: float


# Deployed databases may be resuming from auto-pause (up to ~30 s): wait longer for them.
_REMOTE_CONNECT_TIMEOUT = 90.0
_LOCAL_CONNECT_TIMEOUT = 10.0
DEPLOYED_ENVIRONMENTS = ("testing", "production")


def local_state_dir() -> Path:
    """Where scripts/local-db.sh keeps the local server (LOCAL_PG_DIR moves it, for both)."""
    return Path(os.environ.get("LOCAL_PG_DIR") or PROJECT_ROOT / ".local" / "postgres")


def local_conninfo() -> str:
    """URI of the project-local server; its port is chosen when scripts/local-db.sh creates it."""
    port_file = local_state_dir() / "port"
    if not port_file.is_file():
        raise UsageError(
            "--environment local: the project-local PostgreSQL has not been created; "
            "start it with scripts/local-db.sh start"
        )
    port = port_file.read_text().strip()
    return f"postgresql://postgres@127.0.0.1:{port}/{LOCAL_DATABASE}"


def resolve_target(environment: str | None, db_uri: str | None) -> Target:
    """Pick the database: --db-uri, else --environment, else DATABASE_URL, else libpq's PG* variables."""
    if db_uri and environment:
        raise UsageError("use either --db-uri or --environment, not both")
    if db_uri:
        return Target(db_uri, _REMOTE_CONNECT_TIMEOUT)
    if environment == "local":
        return Target(local_conninfo(), _LOCAL_CONNECT_TIMEOUT)
    if environment in DEPLOYED_ENVIRONMENTS:
        url = os.environ.get("DATABASE_URL")
        if url:
            return Target(url, _REMOTE_CONNECT_TIMEOUT)
        raise UsageError(
            f"--environment {environment}: set DATABASE_URL (or pass --db-uri) to the deployed database: "
            "its host, port and name are stack outputs, its credentials are in the secret the output "
            "DatabaseSecretArn names, and it is reachable only from inside its VPC"
        )
    if environment is not None:
        known = ", ".join(("local", *DEPLOYED_ENVIRONMENTS))
        raise UsageError(f"--environment {environment!r} is not known (known: {known})")
    url = os.environ.get("DATABASE_URL")
    if url:
        return Target(url, _REMOTE_CONNECT_TIMEOUT)
    return Target("", _REMOTE_CONNECT_TIMEOUT)
