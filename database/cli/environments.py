"""Where each environment's database is, for the command line: the one place that knows.

`local` is the project-local PostgreSQL that scripts/local-db.sh runs. Deployed environments
(testing, production) sit in isolated subnets: the CLI reads their status through the deployed
migration function (database/cli/deployed.py) and never applies to them; a deploy does that.
Any other database is named by an explicit URI (--db-uri or DATABASE_URL).
"""

from __future__ import annotations

import os
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


# Deployed databases may be resuming from auto-pause (up to ~30 s): wait longer for them. A server
# on this machine is up or not; waiting helps only while it is still starting.
REMOTE_CONNECT_TIMEOUT = 90.0
LOCAL_CONNECT_TIMEOUT = 10.0
DEPLOYED_ENVIRONMENTS = ("testing", "production")


def local_state_dir() -> Path:
    """Where scripts/local-db.sh keeps the local server (LOCAL_PG_DIR moves it, for both)."""
    return Path(os.environ.get("LOCAL_PG_DIR") or PROJECT_ROOT / ".local" / "postgres")


def shown(text: str) -> str:
    """Paths inside the project, as the user knows them: `database/migrations/004_x.sql`."""
    return text.replace(f"{PROJECT_ROOT}/", "")


def local_data_directory(state: Path) -> Path:
    """The cluster scripts/local-db.sh made for ``state``: as root it lives elsewhere and is recorded."""
    recorded = state / "datadir"
    return Path(recorded.read_text().strip()) if recorded.is_file() else state / "data"


def local_conninfo() -> str:
    """URI of the project-local server, once what answers on its recorded port is known to be it:
    two clones (or LOCAL_PG_DIRs) may have recorded the same port, and only one runs at a time."""
    state = local_state_dir()
    port_file = state / "port"
    if not port_file.is_file():
        raise UsageError(
            "--environment local: the project-local PostgreSQL has not been created; "
            "start it with scripts/local-db.sh start"
        )
    port = port_file.read_text().strip()
    if not port.isdigit():
        raise UsageError(f"--environment local: {port_file} does not hold a port number; "
                         "recreate the server with scripts/local-db.sh destroy && scripts/local-db.sh start")
    _check_local_server(int(port), local_data_directory(state))
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

    from database.access import APPLICATION_ROLE, READONLY_ROLE
    from database.migrator.roles import AccessRoles, ensure_iam_stand_in, ensure_roles

    with psycopg.connect(conninfo, autocommit=True, connect_timeout=int(LOCAL_CONNECT_TIMEOUT)) as connection:
        ensure_iam_stand_in(connection)
        return ensure_roles(connection, AccessRoles(APPLICATION_ROLE, READONLY_ROLE))


def local_roles_summary(conninfo: str) -> str:
    """What `--environment local` shows after an apply, and scripts/local-db.sh after a start."""
    from database.access import APPLICATION_ROLE, READONLY_ROLE

    return (
        f"🔑 Application login: {local_application_uri(conninfo, APPLICATION_ROLE)} "
        f"(read-only: {READONLY_ROLE})"
    )


def _check_local_server(port: int, expected: Path) -> None:
    """Stops (exit 3) unless the server on 127.0.0.1:``port`` serves the data directory ``expected``.
    One attempt: a local server that is up answers at once, and a stopped one is not waited for."""
    import psycopg

    start_it = "start this project's server with scripts/local-db.sh start (it moves to a free port if needed)"
    try:
        with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres",
                             connect_timeout=2, autocommit=True) as connection:
            row = connection.execute("SHOW data_directory").fetchone()
    except psycopg.OperationalError as error:
        text = str(error).strip()
        reason = text.splitlines()[0] if text else type(error).__name__
        if "refused" in text.lower():
            raise ConnectionFailedError(
                f"could not connect: --environment local: the project-local PostgreSQL is not running (nothing "
                f"listens on 127.0.0.1:{port}); start it with scripts/local-db.sh start"
            ) from None
        raise ConnectionFailedError(
            f"could not connect: --environment local: 127.0.0.1:{port} does not answer as the project-local "
            f"PostgreSQL ({reason}); {start_it}"
        ) from None
    serving = Path(str(row[0]) if row else "")
    if os.path.realpath(serving) != os.path.realpath(expected):
        raise ConnectionFailedError(
            f"--environment local: 127.0.0.1:{port} is another PostgreSQL (data directory {serving}), not this "
            f"project's ({expected}); nothing was changed: {start_it}"
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
    if port and not all(part.isdigit() or not part for part in port.split(",")):  # "": a host's default
        raise UsageError(f"{source}: port {port!r} is not a number")
    return conninfo


def connect_timeout_for(conninfo: str) -> float:
    """The local timeout when every host the connection may use is this machine (loopback or a
    Unix socket, libpq's default when no host is named), the remote one otherwise."""
    from psycopg.conninfo import conninfo_to_dict

    options = conninfo_to_dict(conninfo)
    addresses = str(options.get("hostaddr") or os.environ.get("PGHOSTADDR") or "")
    hosts = addresses or str(options.get("host") or os.environ.get("PGHOST") or "")
    return LOCAL_CONNECT_TIMEOUT if all(_on_this_machine(host) for host in hosts.split(",")) else REMOTE_CONNECT_TIMEOUT


def _on_this_machine(host: str) -> bool:
    import ipaddress  # here: the deploy-time function imports this module for `shown` alone

    host = host.strip()
    if not host or host.startswith(("/", "@")) or host == "localhost":  # "": the default Unix socket
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def resolve_target(environment: str | None, db_uri: str | None) -> Target:
    """Pick the database: --db-uri, else --environment, else DATABASE_URL, else libpq's PG* variables.
    A target named but empty (an unset shell variable) is an error, never a fallback to another."""
    if db_uri is not None and environment is not None:
        raise UsageError("use either --db-uri or --environment, not both")
    if db_uri is not None:
        conninfo = check_conninfo(db_uri, "--db-uri")
        return Target(conninfo, connect_timeout_for(conninfo))
    if environment == "local":
        return Target(local_conninfo(), LOCAL_CONNECT_TIMEOUT)
    if environment in DEPLOYED_ENVIRONMENTS:
        raise UsageError(
            f"--environment {environment}: migrations reach the deployed database through a deploy "
            f"(scripts/deploy.sh {environment}); --status, --dry-run and --lint read it through its migration "
            "function. To apply from a machine inside its VPC, name it with --db-uri"
        )
    if environment is not None:
        known = ", ".join(("local", *DEPLOYED_ENVIRONMENTS))
        raise UsageError(f"--environment {environment!r} is not known (known: {known})")
    url = _database_url()
    if url:
        return Target(url, connect_timeout_for(url))
    if not any(os.environ.get(variable) for variable in _LIBPQ_TARGET_VARIABLES):
        raise UsageError(f"no database given: name one with {_HOW_TO_NAME_A_TARGET}")
    return Target("", connect_timeout_for(""))


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
