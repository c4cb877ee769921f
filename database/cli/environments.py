"""Where each environment's database is, for the command line: the one place that knows.

`local` is the project-local PostgreSQL that scripts/local-db.sh runs. Deployed environments
(testing, production) sit in isolated subnets: the CLI reads their status through the deployed
migration function (database/cli/deployed.py) and never applies to them; a deploy does that.
Any other database is named by an explicit URI (--db-uri or DATABASE_URL).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

from database.migrator.errors import ConnectionFailedError, MigrationError


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


def shown(text: str) -> str:
    """Paths inside the project, as the user knows them: `database/migrations/004_x.sql`."""
    return text.replace(f"{PROJECT_ROOT}/", "")


def local_conninfo() -> str:
    """URI of the project-local server; its port is chosen when scripts/local-db.sh creates it.
    A stopped server is reported at once (nothing listens on its port): no point retrying."""
    port_file = local_state_dir() / "port"
    if not port_file.is_file():
        raise UsageError(
            "--environment local: the project-local PostgreSQL has not been created; "
            "start it with scripts/local-db.sh start"
        )
    port = port_file.read_text().strip()
    if not port.isdigit():
        raise UsageError(f"--environment local: {port_file} does not hold a port number; "
                         "recreate the server with scripts/local-db.sh destroy && scripts/local-db.sh start")
    try:
        socket.create_connection(("127.0.0.1", int(port)), timeout=2).close()
    except ConnectionRefusedError:
        raise ConnectionFailedError(
            f"could not connect: --environment local: the project-local PostgreSQL is not running (nothing "
            f"listens on 127.0.0.1:{port}); start it with scripts/local-db.sh start"
        ) from None
    except OSError:
        pass  # slow or odd: let the connection attempts (and their retries) say what is wrong
    return f"postgresql://postgres@127.0.0.1:{port}/{LOCAL_DATABASE}"


def local_application_uri(conninfo: str, role: str) -> str:
    """The local server's URI for ``role`` (trust authentication there: no password, no token)."""
    from psycopg.conninfo import conninfo_to_dict

    options = conninfo_to_dict(conninfo)
    return f"postgresql://{role}@{options['host']}:{options['port']}/{options['dbname']}"


def ensure_local_roles(conninfo: str) -> list[str]:
    """The application's roles on the local server, as a deploy makes them (database/migrator/roles.py),
    with a plain rds_iam role standing in for RDS's; the statements it ran."""
    import psycopg

    from database.migrator.roles import AccessRoles, ensure_iam_stand_in, ensure_roles
    from stacks.settings import APPLICATION_ROLE, READONLY_ROLE

    with psycopg.connect(conninfo, autocommit=True, connect_timeout=int(_LOCAL_CONNECT_TIMEOUT)) as connection:
        ensure_iam_stand_in(connection)
        return ensure_roles(connection, AccessRoles(APPLICATION_ROLE, READONLY_ROLE))


def local_roles_summary(conninfo: str) -> str:
    """What `--environment local` shows after an apply, and scripts/local-db.sh after a start."""
    from stacks.settings import APPLICATION_ROLE, READONLY_ROLE

    return (
        f"🔑 Application login: {local_application_uri(conninfo, APPLICATION_ROLE)} "
        f"(read-only: {READONLY_ROLE})"
    )


# libpq reads these when no connection string names a database.
_LIBPQ_TARGET_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
_HOW_TO_NAME_A_TARGET = (
    "--environment local (the project-local PostgreSQL: scripts/local-db.sh start), --db-uri URI, "
    "DATABASE_URL, or libpq's PGHOST/PGDATABASE variables"
)


def check_conninfo(conninfo: str, source: str) -> str:
    """Refuse a malformed URI or key=value string before connecting, without echoing a password."""
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    from database.migrator.redaction import password_of, scrub, visible_parts

    try:
        options = conninfo_to_dict(conninfo)
    except ProgrammingError as error:
        reason = scrub(str(error).strip(), password_of(conninfo), shown=visible_parts(conninfo))
        raise UsageError(f"{source} is not a PostgreSQL URI or connection string: {reason} "
                         "(expected postgresql://user:password@host:5432/database)") from None
    port = str(options.get("port") or "")
    if port and not all(part.isdigit() for part in port.split(",")):
        raise UsageError(f"{source}: port {port!r} is not a number")
    return conninfo


def resolve_target(environment: str | None, db_uri: str | None) -> Target:
    """Pick the database: --db-uri, else --environment, else DATABASE_URL, else libpq's PG* variables.
    A target named but empty (an unset shell variable) is an error, never a fallback to another."""
    if db_uri is not None and environment is not None:
        raise UsageError("use either --db-uri or --environment, not both")
    if db_uri is not None:
        return Target(check_conninfo(db_uri, "--db-uri"), _REMOTE_CONNECT_TIMEOUT)
    if environment == "local":
        return Target(local_conninfo(), _LOCAL_CONNECT_TIMEOUT)
    if environment in DEPLOYED_ENVIRONMENTS:
        raise UsageError(
            f"--environment {environment}: migrations reach the deployed database through a deploy "
            f"(scripts/deploy.sh {environment}); --status and --dry-run read it through its migration function. "
            "To apply from a machine inside its VPC, name it with --db-uri"
        )
    if environment is not None:
        known = ", ".join(("local", *DEPLOYED_ENVIRONMENTS))
        raise UsageError(f"--environment {environment!r} is not known (known: {known})")
    url = _database_url()
    if url:
        return Target(url, _REMOTE_CONNECT_TIMEOUT)
    if not any(os.environ.get(variable) for variable in _LIBPQ_TARGET_VARIABLES):
        raise UsageError(f"no database given: name one with {_HOW_TO_NAME_A_TARGET}")
    return Target("", _REMOTE_CONNECT_TIMEOUT)


def _database_url() -> str | None:
    """DATABASE_URL, checked; set but empty is an error (CI often sets it from a missing secret)."""
    url = os.environ.get("DATABASE_URL")
    if url is None:
        return None
    if not url.strip():
        raise UsageError(f"DATABASE_URL is set but empty (a missing secret?); name the database with "
                         f"{_HOW_TO_NAME_A_TARGET}")
    return check_conninfo(url, "DATABASE_URL")


if __name__ == "__main__":  # scripts/local-db.sh start
    import sys

    try:
        local = local_conninfo()
        ensure_local_roles(local)
    except MigrationError as error:
        sys.exit(f"local-db: {error}")
    print(local_roles_summary(local))
