"""The deploy function, outside the VPC: the CDK Provider framework's on_event handler.

CloudFormation events (through the Provider framework):
  Create / Update  apply the pending migrations: read the master secret (RDS's own, rotated: read
                   at every run), invoke the in-VPC runner function with the credentials and the
                   DatabaseRoles to make sure of after the migrations in the payload (Lambda Invoke,
                   over TLS, payloads are not logged), and return SchemaVersion / AppliedThisDeploy /
                   AppliedCount. A failure raises, with the runner's message cut to fit the event.
                   Schema drift the runner found before applying is logged; where the environment
                   fails on drift, the runner's refusal is that failure.
                   Nothing to apply when CloudFormation asks for another set of migrations than
                   this function carries (a rollback to the previous properties) or for a set
                   that only lacks files of the previous one (a rollback after the function's
                   code was rolled back too): migrations are forward-only, so it answers success
                   at once and never touches the database.
  Delete           success at once; the database is never touched.

Direct invocations (scripts/run-migrations.sh --status / --dry-run --environment ...):
  {"action": "status"} or {"action": "dry-run"} -> the runner's read-only answer, as is:
  {"ok": true, "environment", "server_version", "notices", "status": {...}} or
  {"ok": false, "error", "kind"}.

psycopg is not imported here, and boto3 only when a request needs it: a Delete answers before
either is loaded.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Protocol

from database.migrator.manifest import build_manifest
from database.migrator.redaction import scrub_document

ASSET_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = ASSET_ROOT / "database" / "migrations"

MESSAGE_LIMIT = 1000  # a CloudFormation event's reason shows a few lines, not a page
APPLIED_LIMIT = 1500  # AppliedThisDeploy; the whole Data answer stays well under 4 KB
INVOKE_RESERVE_SECONDS = 10.0  # kept back from this function's time to answer after the runner
ROLLBACK_ANSWER = "none (rollback: migrations are forward-only)"


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class MigrationDeployError(Exception):
    """The deploy cannot bring the schema forward; the message is what CloudFormation shows."""


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "RequestType" in event:
        return on_event(event, context)
    return direct(event, context)


def on_event(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = event["RequestType"]
    properties = event.get("ResourceProperties") or {}
    environment = str(properties.get("Environment") or os.environ.get("ENVIRONMENT_NAME", "unknown"))
    physical_id = event.get("PhysicalResourceId") or f"schema-migrations-{environment}"
    if request == "Delete":
        _log(f"🗑️  Delete ({environment}): migrations are forward-only; the schema is left as it is")
        return {"PhysicalResourceId": physical_id}
    if request not in ("Create", "Update"):
        raise MigrationDeployError(f"unknown CloudFormation request type {request!r}")
    if not properties.get("MigrationsDigest"):
        raise MigrationDeployError("the resource's properties lack MigrationsDigest: stack and function disagree")
    reason = _nothing_to_apply(event, build_manifest(MIGRATIONS_DIR).digest)
    if reason:
        _log(f"↩️  {request} ({environment}): {reason}; the schema is left as it is (forward-only)")
        return {"PhysicalResourceId": physical_id, "Data": _data(properties.get("LatestMigration"), [], rollback=True)}
    _log(f"🔄 {request} ({environment}): applying pending migrations, newest file {properties.get('LatestMigration')}")
    apply_request: dict[str, Any] = {"action": "apply", "digest": properties.get("MigrationsDigest")}
    roles = properties.get("DatabaseRoles")
    if isinstance(roles, dict):
        apply_request["roles"] = {"application": roles.get("Application"), "readonly": roles.get("ReadOnly")}
    answer = _run(apply_request, context)
    if not answer.get("ok"):
        raise MigrationDeployError(failure_message(answer))
    drift = [str(change) for change in answer.get("schema_drift") or []]
    if drift:
        _log("⚠️  The schema had changed outside migrations since the last apply (drift); the migrations ran over "
             "it and the result is recorded:\n" + "\n".join(f"  • {change}" for change in drift))
    applied = [str(version) for version in answer.get("applied") or []]
    data = _data(answer.get("schema_version"), applied, rollback=False)
    roles_changed = f"; role changes: {answer['roles_changed']}" if "roles_changed" in answer else ""
    _log(f"✅ Schema version {data['SchemaVersion']}; applied this deploy: {data['AppliedThisDeploy']}{roles_changed}")
    return {"PhysicalResourceId": physical_id, "Data": data}


def direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A read-only status or dry-run for the CLI; always answers with a document, never raises."""
    action = event.get("action")
    if action not in ("status", "dry-run"):
        return {
            "ok": False,
            "error": f"unknown action {action!r}: this function answers status and dry-run (applying "
            "happens only through a deploy)",
            "kind": "RequestError",
        }
    try:
        return _run({"action": action}, context)
    except MigrationDeployError as error:
        return {"ok": False, "error": str(error), "kind": type(error).__name__}


def failure_message(answer: dict[str, Any]) -> str:
    """`database/migrations/004_x.sql:3: 004_x failed: ...; 003_y applied earlier in this deploy`,
    then the details on one line, cut to fit a CloudFormation event."""
    lines = [line.strip() for line in str(answer.get("error") or "unknown error").splitlines() if line.strip()]
    applied = answer.get("applied") or []
    if applied and answer.get("kind") != "OutOfTimeError":  # that message counts them already
        lines[0] += f"; {', '.join(applied)} applied earlier in this deploy"
    return _fit(" | ".join(lines), MESSAGE_LIMIT)


def _nothing_to_apply(event: dict[str, Any], carried_digest: str) -> str | None:
    """Why this Create/Update must not touch the database, or None when it should apply."""
    properties = event.get("ResourceProperties") or {}
    wanted = properties.get("MigrationsDigest")
    if wanted != carried_digest:
        return (
            f"CloudFormation asks for migrations {str(wanted)[:12]}, this function carries {carried_digest[:12]} "
            "(a rollback to the previous properties)"
        )
    previous = event.get("OldResourceProperties")
    if event["RequestType"] == "Update" and previous and _only_removes_files(previous, properties):
        return "this update only drops migration files the previous deploy had (a rollback)"
    return None


def _only_removes_files(previous: dict[str, Any], current: dict[str, Any]) -> bool:
    """The new set is the old one less some files, on the same database: nothing to apply."""
    old_recent, new_recent = previous.get("Migrations"), current.get("Migrations")
    if previous.get("Database") != current.get("Database") or not isinstance(old_recent, dict):
        return False
    if not isinstance(new_recent, dict):
        return False
    try:
        if int(current.get("MigrationCount", 0)) >= int(previous.get("MigrationCount", 0)):
            return False
        oldest_listed = min((_number(version) for version in old_recent), default=0)
    except ValueError:
        return False
    return all(
        old_recent.get(version) == digest
        for version, digest in new_recent.items()
        if _number(version) >= oldest_listed  # older files fall outside the old list's window
    )


def _number(version: str) -> int:
    return int(version.split("_", 1)[0])


def _run(request: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Invoke the runner function with the credentials (unless it reads the secret itself)."""
    secrets: list[str] = []
    if os.environ.get("SECRETS_IN_VPC") != "1":
        credentials = _read_secret(os.environ["DATABASE_SECRET_ARN"])
        secrets.append(str(credentials.get("password") or ""))
        request = {**request, "credentials": credentials}
    answer = _invoke_runner(request, context)
    return scrub_document(answer, *secrets)  # type: ignore[return-value]


def _read_secret(arn: str) -> dict[str, Any]:
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        value = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])
    except (BotoCoreError, ClientError, ValueError, KeyError) as error:
        raise MigrationDeployError(f"could not read the database secret {arn}: {error}") from None
    if not isinstance(value, dict):
        raise MigrationDeployError(f"the database secret {arn} is not a JSON object")
    return connection_facts(value)


def connection_facts(secret: dict[str, Any]) -> dict[str, Any]:
    """What the runner connects with: the master secret's username and password (RDS's own secret
    holds nothing else) and where the database is, from this function's environment."""
    return {
        "host": os.environ.get("DATABASE_HOST"),
        "port": os.environ.get("DATABASE_PORT"),
        "dbname": os.environ.get("DATABASE_NAME"),
        "username": secret.get("username"),
        "password": secret.get("password"),
    }


def _invoke_runner(request: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    name = os.environ["RUNNER_FUNCTION_NAME"]
    wait = max(10.0, context.get_remaining_time_in_millis() / 1000 - INVOKE_RESERVE_SECONDS)
    # One attempt: a retried invoke would start a second run queueing behind the first's lock.
    config = Config(read_timeout=wait, connect_timeout=10, retries={"total_max_attempts": 1})
    started = time.monotonic()
    try:
        response = boto3.client("lambda", config=config).invoke(
            FunctionName=name, InvocationType="RequestResponse", Payload=json.dumps(request).encode()
        )
        answer = json.loads(response["Payload"].read())
    except (BotoCoreError, ClientError, ValueError) as error:
        raise MigrationDeployError(
            f"invoking the migration function {name} failed after {time.monotonic() - started:.0f}s: {error}"
        ) from None
    if response.get("FunctionError"):
        message = answer.get("errorMessage", answer) if isinstance(answer, dict) else answer
        raise MigrationDeployError(f"the migration function {name} failed: {message}")
    if not isinstance(answer, dict):
        raise MigrationDeployError(f"the migration function {name} answered {str(answer)[:200]!r}")
    return answer


def _data(schema_version: object, applied: list[str], *, rollback: bool) -> dict[str, str]:
    if rollback:
        applied_text = ROLLBACK_ANSWER
    elif applied:
        applied_text = _fit_list(applied, APPLIED_LIMIT)
    else:
        applied_text = "none"
    return {
        "SchemaVersion": str(schema_version) if schema_version and schema_version != "none" else "none",
        "AppliedThisDeploy": applied_text,
        "AppliedCount": str(len(applied)),
    }


def _fit_list(versions: list[str], limit: int) -> str:
    """Comma-separated versions; past the limit, the newest are kept and the rest counted."""
    text = ",".join(versions)
    if len(text) <= limit:
        return text
    kept: list[str] = []
    for version in reversed(versions):
        if len(",".join([version, *kept])) + 30 > limit:
            break
        kept.insert(0, version)
    return f"({len(versions) - len(kept)} earlier),{','.join(kept)}"


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"



def _log(line: str) -> None:
    print(line, flush=True)
