"""Rehearse the pending migrations on a copy of a developer's database (CREATE DATABASE ...
TEMPLATE): measured as on a deployed environment's clone (database/rehearsal/measure.py), and
the copy dropped, always. The source database is only read (as the template)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from database.migrator.errors import MigrationError
from database.migrator.postgres import APPLICATION_NAME
from database.rehearsal.measure import Budgets, Rehearsal, measure_apply

if TYPE_CHECKING:
    from database.migrator.events import EventSink
    from database.migrator.orchestration import RunnerSettings


class RehearsalError(MigrationError):
    """The copy could not be made (the source has other sessions, no right to create databases)."""

    exit_code = 3


def rehearse(settings: RunnerSettings, budgets: Budgets, error_rows: int, emit: EventSink) -> Rehearsal:
    """Copy the target database, apply its pending migrations to the copy with the runner core
    (lint findings judged on the copy beside them), measure, judge, drop the copy."""
    from database.cli.lint import cli_lint_source

    source = settings.connect.conninfo
    database = str(conninfo_to_dict(source).get("dbname") or os.environ.get("PGDATABASE") or "")
    if not database:
        raise RehearsalError("--rehearse needs to know the database to copy: name it in the URI")
    copy = f"{database[:40]}_rehearsal_{os.getpid()}"
    copy_settings = replace(settings, connect=replace(settings.connect, conninfo=make_conninfo(source, dbname=copy)))
    with _copy_of(source, database, copy):
        return measure_apply(copy_settings, budgets, cli_lint_source, error_rows, f"{copy} (dropped)", emit)


@contextmanager
def _copy_of(source: str, database: str, copy: str) -> Iterator[None]:
    """CREATE DATABASE copy TEMPLATE database, dropped however the block ends."""
    admin = make_conninfo(source, dbname="postgres")
    try:
        with psycopg.connect(admin, autocommit=True, application_name=f"{APPLICATION_NAME} rehearsal") as connection:
            connection.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{database}"'.encode())
    except psycopg.errors.ObjectInUse:
        raise RehearsalError(
            f"cannot copy {database}: other sessions are connected to it (a copy needs it idle for a moment); "
            f"close them (SELECT pid, application_name FROM pg_stat_activity WHERE datname = '{database}') "
            "and rehearse again"
        ) from None
    except psycopg.Error as error:
        raise RehearsalError(f"cannot copy {database}: {str(error).strip()}") from None
    try:
        yield
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)'.encode())
