"""The in-VPC migration function: runs the unchanged runner core against the environment's database.

Invoked only by the deploy function (never by CloudFormation directly), with one of:

    {"action": "apply", "digest": <manifest digest the deploy expects>, "credentials": {...},
     "roles": {"application": <name>, "readonly": <name>}, "budget_seconds": <at most this long>,
     "applied_since": <epoch seconds the deploy started>}
    {"action": "status" | "dry-run" | "lint", "credentials": {...}, "budget_seconds": <at most this long>}
    {"action": "rehearse", "credentials": {...}, "clone_host": <a rehearsal clone's endpoint>, "clone_port",
     "migrations": {<file name>: <SQL>}, "lint_report": <lint-report.json's document for them>,
     "budgets": {"max_lock_seconds", "max_duration_seconds"}, "budget_seconds": ...}

``credentials`` is the host, port and dbname of the database and the master secret's username and
password, read by the deploy function outside the VPC (this function's subnets have no route to
Secrets Manager). When the environment has a Secrets Manager endpoint, the payload carries none and
this function reads DATABASE_SECRET_ARN itself.

``roles``: after the migrations, the application's roles and their privileges are made sure of
(database.migrator.roles); a payload without it (a rollback to a stack that had no roles) skips that.

It answers with a JSON object and never raises for a migration problem:
    {"ok": true, "environment", "server_version", "notices", "applied": [...], "schema_version",
     "applied_since": [every version applied since applied_since, by this run or an earlier one],
     "schema_drift": [...] (apply), "roles_changed" (apply), "baselined": [...] (apply, BASELINE_VERSION's
     first run only), "status": {...} (status, dry-run), "findings": [...] (lint),
     "rehearsal": {...} (rehearse: database/rehearsal/measure.py's document)}
    {"ok": false, "error": <message, paths relative to the asset>, "kind": <error class>, "applied": [...],
     "failed": <the migration it stopped in>, "rolled_back": <it left nothing behind>,
     "budget_cut": <a statement was stopped by the end of this run's time>, "schema_drift": [...]}

Before an apply runs migrations it compares the live schema with the one the last apply recorded:
the changes made outside migrations are named in the log and the answer (``schema_drift``), and
with SCHEMA_DRIFT=fail (stacks/settings.py, per environment) the run stops there, nothing applied.
Then the lint gate: the pending files' findings, made by squawk at synth (lint-report.json in the
asset), judged with the live table sizes (LINT_ERROR_ROWS, per environment); an unacknowledged
error stops the run there too. "lint" answers those findings and applies nothing.

"rehearse" (scripts/rehearse.sh) applies the migrations the caller sends, from its checkout, to a
copy-on-write clone of this environment's cluster, never to the database itself: ``clone_host``
must be the endpoint of a cluster named ``<this cluster>-rehearsal-...`` in the same account and
region (the clone keeps the cluster's credentials). It measures locks, rewrites and durations
(database/rehearsal/measure.py) and answers the report; a failing migration is part of the report.

TLS is always on: sslmode=verify-full against the Amazon RDS CA bundle shipped beside the code.
The whole run fits in the invocation (or the shorter budget the deploy gives): connect retries (an
Aurora cluster resuming from auto-pause), the lock wait and every statement are bounded by the
remaining time, and the core stops between migrations when too little is left. The lock wait is
the whole budget: a duplicate invocation waits for the first run, then finds nothing to do. The
guide's log lines go to stdout (CloudWatch), without the password.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from psycopg.conninfo import make_conninfo

from database.cli.render import HumanRenderer
from database.lint import DEFAULT_ERROR_ROWS
from database.lint.gate import lint_gate, lint_pending, shipped_report
from database.migrator.errors import MigrationError, MigrationFailedError
from database.migrator.events import (
    Applied,
    Applying,
    Connected,
    Event,
    EventSink,
    Notice,
    Planned,
    SchemaDrift,
    ignore_events,
)
from database.migrator.manifest import build_manifest
from database.migrator.orchestration import RunnerSettings, all_checks, apply, baseline, name_versions, read_status
from database.migrator.postgres import ConnectSettings, connect
from database.migrator.redaction import scrub, scrub_document
from database.migrator.report import status_to_dict
from database.migrator.roles import AccessRoles, ensure_roles
from database.migrator.schema_state import drift_check
from schema_migrations.deploy import connection_facts

ASSET_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = ASSET_ROOT / "database" / "migrations"
CA_BUNDLE = ASSET_ROOT / "rds-ca-bundle.pem"
LINT_REPORT = ASSET_ROOT / "lint-report.json"

# Kept back from the invocation's remaining time for turning the result into the answer.
ANSWER_RESERVE_SECONDS = 2.0
# Statements end this long before that; a migration starts only with twice this much left.
MARGIN_SECONDS = 15.0
# Long enough for an Aurora cluster resuming from auto-pause (15-30 s), with retries.
CONNECT_TIMEOUT_SECONDS = 120.0
LOCK_TIMEOUT = "5s"  # a migration's DDL waiting behind the application's queries: fail, don't block them
STATEMENT_TIMEOUT = "10min"  # lowered further to the time left in the invocation

_CREDENTIAL_FIELDS = ("host", "port", "dbname", "username", "password")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.sql")  # a flat file name, as discovery reads them
# SCHEMA_DRIFT, set by the stack: what an apply does with drift found before it runs migrations.
_DRIFT_POLICIES = {"report": False, "fail": True}  # -> refuse


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class RequestError(MigrationError):
    """The invocation asked for something this function cannot do (a bad payload)."""


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    budget = float(event.get("budget_seconds") or math.inf)
    deadline = time.monotonic() + min(context.get_remaining_time_in_millis() / 1000, budget) - ANSWER_RESERVE_SECONDS
    environment = os.environ.get("ENVIRONMENT_NAME", "unknown")
    action = event.get("action")
    credentials = event.get("credentials")
    password = str(credentials.get("password") or "") if isinstance(credentials, dict) else ""
    log = _ScrubbingWriter(password)
    report = _Report()
    renderer = HumanRenderer(log, log, quiet=False)  # type: ignore[arg-type]

    def emit(event: Event) -> None:
        report.event(event)
        renderer.event(event)

    try:
        if action not in ("apply", "status", "dry-run", "lint", "rehearse"):
            raise RequestError(f"unknown action {action!r}: expected apply, status, dry-run, lint or rehearse")
        if not isinstance(credentials, dict):
            credentials = _secret_from_environment()
            log.secrets.append(str(credentials.get("password") or ""))
        if action == "rehearse":
            host = rehearsal_host(event.get("clone_host"), credentials.get("host"))
            credentials = {**credentials, "host": host, "port": event.get("clone_port") or credentials.get("port")}
        settings = _settings(credentials, environment, deadline)
        renderer.start("apply" if action == "apply" else "status")
        if action == "apply":
            _check_digest(event.get("digest"))
            roles = _access_roles(event.get("roles"))
            baselined = _first_deploy_baseline(settings, emit, log)
            result = apply(settings, emit)
            renderer.finished(result)
            answer: dict[str, Any] = {
                "applied": report.applied,
                "schema_version": report.schema_version(),
                "schema_drift": report.schema_drift,
                "applied_since": report.applied_since(event.get("applied_since")),
            }
            if baselined:
                answer["baselined"] = baselined
            if roles is not None:
                answer["roles_changed"] = _ensure_roles(settings, roles, log)
        elif action == "rehearse":
            answer = {"rehearsal": _rehearse(event, settings, emit, log)}
        elif action == "lint":
            findings, _ = lint_pending(settings, shipped_report(LINT_REPORT), _lint_error_rows(), emit)
            answer = {"findings": [finding.to_dict() for finding in findings]}
        else:
            status = read_status(settings, emit)
            renderer.status(status)
            if action == "dry-run":
                renderer.dry_run(status)
            answer = {"status": status_to_dict(status, ASSET_ROOT)}
        answer.update(ok=True, mode=action, environment=environment)
    except MigrationError as error:
        renderer.error(error)
        answer = {
            "ok": False,
            "error": relative_paths(str(error)),
            "kind": type(error).__name__,
            "applied": report.applied,
            "total": report.total,
            "schema_drift": report.schema_drift,
            "failed": report.failed(),
            "rolled_back": report.left_nothing_behind(),
            "budget_cut": _cut_by_budget(error, deadline),
        }
    answer.update(server_version=report.server_version, notices=report.notices)
    return scrub_document(answer, *log.secrets)  # type: ignore[return-value]


def relative_paths(message: str) -> str:
    """The core names files by absolute path; /var/task/database/... means nothing to a reader."""
    return message.replace(f"{ASSET_ROOT}/", "")


def _settings(credentials: dict[str, Any], environment: str, deadline: float) -> RunnerSettings:
    missing = [field for field in _CREDENTIAL_FIELDS if not credentials.get(field)]
    if missing:
        raise RequestError(f"the database credentials lack {', '.join(missing)}")
    conninfo = make_conninfo(
        "",
        host=str(credentials["host"]),
        port=str(credentials["port"]),
        dbname=str(credentials["dbname"]),
        user=str(credentials["username"]),
        password=str(credentials["password"]),
        sslmode="verify-full",
        sslrootcert=str(CA_BUNDLE),
    )
    policy = os.environ.get("SCHEMA_DRIFT", "report")
    if policy not in _DRIFT_POLICIES:
        raise RequestError(f"SCHEMA_DRIFT={policy!r}: expected one of {', '.join(_DRIFT_POLICIES)}")
    left = deadline - time.monotonic()
    return RunnerSettings(
        migrations_dir=MIGRATIONS_DIR,
        connect=ConnectSettings(
            conninfo=conninfo,
            total_timeout_seconds=max(1.0, min(CONNECT_TIMEOUT_SECONDS, left - 2 * MARGIN_SECONDS)),
            lock_timeout=LOCK_TIMEOUT,
            statement_timeout=STATEMENT_TIMEOUT,
        ),
        applied_by=f"deploy:{environment}",
        lock_wait_seconds=max(1.0, left),
        lock_retries=5,  # a migration failing on LOCK_TIMEOUT is tried again, within the time budget
        deadline=deadline,
        deadline_margin_seconds=MARGIN_SECONDS,
        pre_apply_check=all_checks(
            drift_check(refuse=_DRIFT_POLICIES[policy]), lint_gate(shipped_report(LINT_REPORT), _lint_error_rows())
        ),
    )


def rehearsal_host(clone_host: object, database_host: object) -> str:
    """The clone's endpoint, when it is one: ``<cluster>-rehearsal-<stamp>.<the cluster's own
    domain>`` (Aurora names endpoints ``<identifier>.cluster-<id>.<region>.rds.amazonaws.com``), and
    never the database's own endpoint."""
    host, own = str(clone_host or ""), str(database_host or "")
    cluster, _, domain = own.partition(".")
    name, _, clone_domain = host.partition(".")
    if not (cluster and domain and clone_domain == domain and name.startswith(f"{cluster}-rehearsal-")):
        raise RequestError(
            f"refused: clone_host {host!r} is not a rehearsal clone of {cluster or 'this database'} "
            f"({cluster}-rehearsal-*.{domain}); a rehearsal never runs on the database itself"
        )
    return host


def _rehearse(
    event: dict[str, Any], settings: RunnerSettings, emit: EventSink, log: _ScrubbingWriter
) -> dict[str, Any]:
    """The caller's migration files in a directory of their own, applied to the clone as a deploy
    would apply them (BASELINE_VERSION's baseline first), measured."""
    from database.rehearsal.measure import Budgets, measure_apply

    files, report, limits = event.get("migrations"), event.get("lint_report"), event.get("budgets")
    if not isinstance(files, dict) or not all(isinstance(sql, str) for sql in files.values()):
        raise RequestError("rehearse needs migrations: an object of file name -> SQL")
    if not isinstance(report, dict) or not isinstance(limits, dict):
        raise RequestError("rehearse needs lint_report and budgets objects")
    for name in files:
        if not _FILE_NAME.fullmatch(str(name)):
            raise RequestError(f"rehearse: {name!r} is not a migration file name")
    try:
        budgets = Budgets(float(limits["max_lock_seconds"]), float(limits["max_duration_seconds"]))
    except (KeyError, TypeError, ValueError):
        raise RequestError(f"rehearse: budgets {limits!r} lack max_lock_seconds or max_duration_seconds") from None
    with tempfile.TemporaryDirectory(prefix="rehearsal-") as root:
        directory = Path(root) / "database" / "migrations"
        directory.mkdir(parents=True)
        for name, sql in files.items():
            (directory / name).write_bytes(sql.encode("utf-8"))
        report_path = Path(root) / "lint-report.json"
        report_path.write_text(json.dumps(report), encoding="utf-8")
        applied_by = settings.applied_by.replace("deploy:", "rehearsal:", 1)
        settings = replace(settings, migrations_dir=directory, applied_by=applied_by)
        _first_deploy_baseline(settings, emit, log)
        clone = str(event.get("clone_host") or "").partition(".")[0]
        rehearsal = measure_apply(settings, budgets, shipped_report(report_path), _lint_error_rows(), clone, emit)
        document = rehearsal.document(budgets)
    return json.loads(json.dumps(document).replace(f"{root}/", ""))  # type: ignore[no-any-return]


def _first_deploy_baseline(settings: RunnerSettings, emit: Callable[[Event], None], log: _ScrubbingWriter) -> list[str]:
    """BASELINE_VERSION, set by the stack for an environment restored from a snapshot: on a database
    that records no migration yet, every migration up to it is recorded as applied without running
    (baselined; the apply then runs the rest). A database that records migrations (the old runner's
    table is adopted by the apply) is left alone, and the log says so."""
    version = os.environ.get("BASELINE_VERSION")
    if not version:
        return []
    adopted = baseline(settings, emit, version, only_untracked=True)
    if adopted:
        log.write(f"📌 Baselined {name_versions(adopted)} (BASELINE_VERSION={version}): recorded as applied, not run\n")
    else:
        log.write(f"📌 BASELINE_VERSION={version} ignored: the database already records its migrations\n")
    return adopted


def _lint_error_rows() -> int:
    """LINT_ERROR_ROWS, set by the stack: from this many estimated rows a locking statement is an error."""
    value = os.environ.get("LINT_ERROR_ROWS", str(DEFAULT_ERROR_ROWS))
    if not value.isdigit():
        raise RequestError(f"LINT_ERROR_ROWS={value!r}: expected a whole number of rows")
    return int(value)


def _access_roles(requested: object) -> AccessRoles | None:
    if requested is None:
        return None
    if not isinstance(requested, dict):
        raise RequestError(f"roles must be an object with application and readonly, got {requested!r}")
    return AccessRoles(str(requested.get("application")), str(requested.get("readonly")))


def _ensure_roles(settings: RunnerSettings, roles: AccessRoles, log: _ScrubbingWriter) -> int:
    """After the migrations, in a session of its own: the roles and grants that are missing, if any."""
    with connect(settings.connect, ignore_events) as connection:
        statements = ensure_roles(connection, roles)
    names = f"{roles.application}, {roles.readonly}"
    log.write(f"🔑 Roles {names}: {len(statements) or 'no'} change{'' if len(statements) == 1 else 's'}\n")
    for statement in statements:
        log.write(f"   {statement}\n")
    return len(statements)


def _cut_by_budget(error: MigrationError, deadline: float) -> bool:
    """A statement cancelled (57014) at the end of this run's time, not by the configured timeout."""
    cancelled = isinstance(error, MigrationFailedError) and error.sqlstate == "57014"
    return cancelled and deadline - time.monotonic() <= MARGIN_SECONDS + 2


def _check_digest(expected: object) -> None:
    """Both functions share one asset; a mismatch means they were deployed from different builds."""
    carried = build_manifest(MIGRATIONS_DIR).digest
    if expected != carried:
        raise RequestError(
            f"this function carries migrations with digest {carried[:12]}, the deploy asked for "
            f"{str(expected)[:12]}: the two functions come from different builds; deploy again"
        )


def _secret_from_environment() -> dict[str, Any]:
    """With a Secrets Manager endpoint in the VPC, this function reads the secret itself."""
    arn = os.environ.get("DATABASE_SECRET_ARN")
    if not arn:
        raise RequestError("no credentials in the payload and no DATABASE_SECRET_ARN to read them from")
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        secret = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
        value = json.loads(secret)
    except (BotoCoreError, ClientError, ValueError, KeyError) as error:
        raise RequestError(f"could not read the database secret {arn}: {type(error).__name__}: {error}") from None
    if not isinstance(value, dict):
        raise RequestError(f"the database secret {arn} is not a JSON object")
    return connection_facts(value)


class _Report:
    """What the answer needs from the run's events."""

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.previously_applied: list[str] = []
        self.total: int | None = None
        self.server_version: str | None = None
        self.notices: list[str] = []
        self.schema_drift: list[str] = []  # found before the apply ran migrations
        self.applied_at: dict[str, datetime | None] = {}
        self.started: Applying | None = None  # the migration under way, until it is applied

    def event(self, event: Event) -> None:
        match event:
            case Connected(version):
                self.server_version = version
            case Planned(status):
                self.total = len(status.pending)
                self.previously_applied = [item.version for item in status.applied]
                # baselined rows (recorded by BASELINE_VERSION, never run) are no migration this deploy applied
                self.applied_at = {item.version: item.applied_at for item in status.applied if not item.baselined}
            case Applying():
                self.started = event
            case Applied(version, _):
                self.applied.append(version)
                self.started = None
            case Notice(message):
                self.notices.append(message)
            case SchemaDrift(changes):
                self.schema_drift = list(changes)
            case _:
                pass

    def failed(self) -> str | None:
        return self.started.version if self.started else None

    def left_nothing_behind(self) -> bool:
        """Stopped between migrations, or in one that ran in a transaction (rolled back whole)."""
        return self.started is None or self.started.in_transaction

    def applied_since(self, since: object) -> list[str]:
        """Versions applied at or after ``since`` (epoch seconds, the deploy's start): by earlier
        runs of the same deploy, then by this one."""
        if not isinstance(since, int | float):
            return self.applied
        start = datetime.fromtimestamp(since, UTC)
        earlier = [version for version, at in self.applied_at.items() if at is not None and at >= start]
        return sorted(earlier, key=_number) + self.applied

    def schema_version(self) -> str | None:
        """The newest migration the database now has (versions start with their number)."""
        versions = self.previously_applied + self.applied
        return max(versions, key=_number) if versions else None


def _number(version: str) -> int:
    return int(version.split("_", 1)[0])


class _ScrubbingWriter:
    """stdout for the log lines: every known password replaced by ***, paths relative to the asset."""

    def __init__(self, *secrets: str) -> None:
        self.secrets = [secret for secret in secrets if secret]

    def write(self, text: str) -> int:
        return sys.stdout.write(relative_paths(scrub(text, *self.secrets)))

    def flush(self) -> None:
        sys.stdout.flush()

