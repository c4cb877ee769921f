"""The deploy function, outside the VPC: the CDK Provider framework's on_event and is_complete handler.

CloudFormation events (through the Provider framework, which calls ``on_event`` once and then
``is_complete`` until it answers IsComplete):
  on_event     decides, without touching the database, what the request means. It asks
               CloudFormation for its stack's status (DescribeStacks on the event's StackId):
               - the stack is rolling back (``*ROLLBACK_IN_PROGRESS``): nothing to apply, whatever
                 the properties say (migrations are forward-only); SchemaVersion is the stack's
                 ``SchemaVersion`` output, what the last successful deploy recorded;
               - Create / Update while the stack is CREATE_IN_PROGRESS / UPDATE_IN_PROGRESS, with
                 the migrations this function carries: apply them (in is_complete);
               - anything else is refused (a hand-made event invoked directly), as is a request for
                 migrations other than the ones this function carries.
               Delete: success at once; the database is never touched.
  Custom::CreateRollbackGuard (production, beside the database): nothing on Create / Update. Its
               Delete, only while the stack is ROLLBACK_IN_PROGRESS (a failed first create rolls
               back), turns the new database's deletion protection off, so that the rollback can
               delete it and the create can be retried. Any other Delete leaves the protection on.
  is_complete  applies: reads the master secret (RDS's own, rotated: read at every run) and invokes
               the in-VPC runner once, the credentials and the DatabaseRoles to make sure of after the
               migrations in the payload (Lambda Invoke, over TLS, payloads are not logged). Schema
               drift the runner found before applying is logged; where the environment fails on
               drift, the runner's refusal is the failure. The
               runner stops cleanly between migrations when its time runs short; the next call
               continues where it stopped, until nothing is pending or the deploy's time for
               migrations (DEPLOY_BUDGET_SECONDS, migration.total_timeout_seconds) is used up;
               the framework's own total timeout is longer. The answer's Data:
               SchemaVersion / AppliedThisDeploy / AppliedCount. A failure raises; every message
               fits CloudFormation's 4 KB response in UTF-8 bytes.

on_event hands its decision to is_complete in a top-level key of its answer (``SchemaMigrations``):
the framework merges that answer into the event it passes on, and never sends such keys to
CloudFormation.

Direct invocations (scripts/run-migrations.sh --status / --dry-run / --lint --environment ...):
  {"action": "status" | "dry-run" | "lint"} -> the runner's read-only answer, as is:
  {"ok": true, "environment", "server_version", "notices", "status": {...}} (lint: "findings": [...];
  status: "migrations_digest", the digest of the migrations this function carries)
  or {"ok": false, "error", "kind"}.
  {"action": "rehearse", "clone_host", "clone_port", "migrations", "lint_report", "budgets"} (scripts/rehearse.sh):
  passed to the runner with the credentials, which rehearses on the clone: {"ok": true, "rehearsal": {...}}.

psycopg is not imported here, and boto3 only when a request needs it: a Delete answers before
either is loaded.
"""

from __future__ import annotations

import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from database.migrator.manifest import build_manifest
from database.migrator.redaction import scrub_document

ASSET_ROOT = Path(__file__).resolve().parent.parent
MIGRATIONS_DIR = ASSET_ROOT / "database" / "migrations"

# A failure's message, as JSON in UTF-8 bytes. The framework sends it as the response's Reason with
# "Error: ", a "Logs: /aws/lambda/<name>" line and up to ten stack frames of its own around it, in
# the same 4096-byte response as the stack id, request id and resource ids.
MESSAGE_BYTES = 2000
APPLIED_BYTES = 1500  # AppliedThisDeploy; the whole Data answer stays well under 4 KB
INVOKE_RESERVE_SECONDS = 10.0  # kept back from this function's time to answer after the runner
MIN_RUN_SECONDS = 30.0  # a runner invocation with less than this could not apply anything
ROLLBACK_ANSWER = "none (rollback: migrations are forward-only)"
GUARD_RESOURCE_TYPE = "Custom::CreateRollbackGuard"
CREATE_ROLLBACK_STATUS = "ROLLBACK_IN_PROGRESS"  # exactly: the rollback of a failed first create
STATE_KEY = "SchemaMigrations"
SCHEMA_VERSION_OUTPUT = "SchemaVersion"  # the stack output holding the resource's SchemaVersion
APPLYING_STATUSES = ("CREATE_IN_PROGRESS", "UPDATE_IN_PROGRESS")
# Invoke errors raised before the runner's code runs: retrying them cannot apply anything twice.
NOT_STARTED_ERRORS = ("ResourceNotReadyException", "TooManyRequestsException", "EC2ThrottledException")
BACKOFF_CAP_SECONDS = 20.0
NEXT_CALL_SECONDS = 15.0  # the framework calls is_complete again 10 s after "not complete"
REHEARSAL_KEYS = ("clone_host", "clone_port", "migrations", "lint_report", "budgets")


class LambdaContext(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


class MigrationDeployError(Exception):
    """The deploy cannot bring the schema forward; the message is what CloudFormation shows, cut
    to fit its response."""

    def __init__(self, message: str) -> None:
        super().__init__(fit_bytes(message, MESSAGE_BYTES))


def handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    if "RequestType" not in event:
        return direct(event, context)
    try:
        if STATE_KEY in event:
            return is_complete(event, context)
        return on_event(event, context)
    except MigrationDeployError:
        raise
    except Exception as error:  # whatever it is, CloudFormation must get a message that fits
        raise MigrationDeployError(f"{type(error).__name__}: {error}") from None


def on_event(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    started = time.time()  # the deploy's time for migrations counts from here
    if event.get("ResourceType") == GUARD_RESOURCE_TYPE:
        return create_rollback_guard(event)
    request = event["RequestType"]
    properties = event.get("ResourceProperties") or {}
    environment = str(properties.get("Environment") or os.environ.get("ENVIRONMENT_NAME", "unknown"))
    physical_id = event.get("PhysicalResourceId") or f"schema-migrations-{environment}"
    if request == "Delete":
        _log(f"🗑️  Delete ({environment}): migrations are forward-only; the schema is left as it is")
        return {"PhysicalResourceId": physical_id, STATE_KEY: {"done": True}}
    if request not in ("Create", "Update"):
        raise MigrationDeployError(f"unknown CloudFormation request type {request!r}")
    stack = read_stack(str(event.get("StackId") or ""))
    if stack.rolling_back:
        _log(f"↩️  {request} ({environment}): the stack is {stack.status}; the schema is left as it is (forward-only)")
        data = _data(stack.schema_version, [], rollback=True)
        return {"PhysicalResourceId": physical_id, STATE_KEY: {"done": True, "data": data}}
    if stack.status not in APPLYING_STATUSES:
        raise MigrationDeployError(
            f"refused: a {request} arrived while stack {stack.name} is {stack.status}; migrations are applied "
            "only by a deploy in progress (run `scripts/deploy.sh <environment>`)"
        )
    _check_digest(request, properties.get("MigrationsDigest"))
    budget = float(os.environ.get("DEPLOY_BUDGET_SECONDS") or 0) or _remaining(context)
    _log(f"🔄 {request} ({environment}): applying pending migrations, newest file {properties.get('LatestMigration')}")
    state = {"done": False, "started": started, "deadline": started + budget}
    return {"PhysicalResourceId": physical_id, STATE_KEY: state}


def is_complete(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """One step of applying: IsComplete once nothing is pending, with the resource's Data."""
    state = event[STATE_KEY]
    if state.get("done"):
        return {"IsComplete": True, **({"Data": state["data"]} if state.get("data") else {})}
    stack = read_stack(str(event.get("StackId") or ""))
    if stack.rolling_back:  # CloudFormation gave up on this request (its timeout): leave the schema
        _log(f"↩️  the stack is {stack.status}: stopping; what is applied stays applied")
        return {"IsComplete": True}
    if stack.status not in APPLYING_STATUSES:
        raise MigrationDeployError(f"refused: stack {stack.name} is {stack.status}, no deploy is in progress")
    deploy_left = float(state["deadline"]) - time.time()
    if deploy_left < MIN_RUN_SECONDS + INVOKE_RESERVE_SECONDS:
        raise _time_used_up(None)
    # AppliedThisDeploy: what the database recorded (its clock) since on_event began (this one's):
    # both clocks are AWS-synchronised to well under the seconds between on_event and the first
    # migration, and the previous deploy's last migration committed before this deploy began.
    properties = event["ResourceProperties"]
    request: dict[str, Any] = {"action": "apply", "digest": properties.get("MigrationsDigest"),
                               "applied_since": state["started"]}  # fmt: skip
    roles = properties.get("DatabaseRoles")
    if isinstance(roles, dict):  # made sure of by the run that applies the last migration
        request["roles"] = {"application": roles.get("Application"), "readonly": roles.get("ReadOnly")}
    answer, budget = _run(request, context, deploy_left)
    _log_drift(answer)
    if answer.get("ok"):
        applied = [str(version) for version in answer.get("applied_since") or []]
        data = _data(answer.get("schema_version"), applied, rollback=False)
        if answer.get("baselined"):  # an environment restored from a snapshot: its first migrating deploy
            _log(f"📌 Baselined (recorded as applied, not run): {_fit_list(list(answer['baselined']), APPLIED_BYTES)}")
        roles_changed = f"; role changes: {answer['roles_changed']}" if "roles_changed" in answer else ""
        _log(f"✅ Schema version {data['SchemaVersion']}; applied this deploy: {data['AppliedThisDeploy']}"
             f"{roles_changed}")
        return {"IsComplete": True, "Data": data}
    if _continues(answer, full_run=budget >= _runner_timeout()):
        if float(state["deadline"]) - time.time() < MIN_RUN_SECONDS + INVOKE_RESERVE_SECONDS + NEXT_CALL_SECONDS:
            raise _time_used_up(answer)  # no time for another run: say why this one stopped
        _log(f"⏭️  {answer.get('kind')}: {answer.get('error')}; the next call continues")
        return {"IsComplete": False}
    raise MigrationDeployError(failure_message(answer))


def _log_drift(answer: dict[str, Any]) -> None:
    """Schema drift the runner found before applying; where the environment fails on drift, the
    runner's refusal is the deploy's failure."""
    drift = [str(change) for change in answer.get("schema_drift") or []]
    if drift:
        _log("⚠️  The schema had changed outside migrations since the last apply (drift):\n"
             + "\n".join(f"  • {change}" for change in drift))


def _time_used_up(last: dict[str, Any] | None) -> MigrationDeployError:
    """The deploy's time for migrations is over with some still pending; why the last run stopped."""
    reason = f" (the last run: {failure_message(last)})" if last else ""
    return MigrationDeployError(
        f"the deploy's time for migrations is used up with migrations still pending{reason}; those applied stay "
        "applied: deploy again to continue (or raise migration.total_timeout_seconds in stacks/settings.py)"
    )


def create_rollback_guard(event: dict[str, Any]) -> dict[str, Any]:
    """Lets the rollback of a failed first create delete a database created with deletion protection."""
    properties = event.get("ResourceProperties") or {}
    identifier, kind = str(properties.get("DatabaseIdentifier")), properties.get("DatabaseKind")
    answer = {"PhysicalResourceId": f"create-rollback-guard-{identifier}", STATE_KEY: {"done": True}}
    if event["RequestType"] != "Delete":
        return answer
    stack = read_stack(str(event.get("StackId") or ""))
    if stack.status != CREATE_ROLLBACK_STATUS:
        _log(f"🛡️  stack {stack.name} is {stack.status}: deletion protection of {identifier} stays on")
        return answer
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    rds = boto3.client("rds")
    try:
        if kind == "cluster":
            rds.modify_db_cluster(DBClusterIdentifier=identifier, DeletionProtection=False, ApplyImmediately=True)
        elif kind == "instance":
            rds.modify_db_instance(DBInstanceIdentifier=identifier, DeletionProtection=False, ApplyImmediately=True)
        else:
            raise MigrationDeployError(f"DatabaseKind {kind!r}: expected cluster or instance")
    except (BotoCoreError, ClientError) as error:
        raise MigrationDeployError(f"could not turn off deletion protection of {identifier}: {error}") from None
    _log(f"🔓 the first create of {stack.name} rolls back: deletion protection of {identifier} is off, so it can go")
    return answer


def _continues(answer: dict[str, Any], *, full_run: bool) -> bool:
    """Whether a run that stopped should be followed by another (the next call checks that the
    deploy has time left): it ran out of its time between migrations, or waiting for another
    run's lock (a duplicate invocation), or in a migration that had no whole run to itself and was
    rolled back completely. Not for a statement that had a whole run and still did not finish
    (failure_message says what to do about it)."""
    if answer.get("kind") in ("OutOfTimeError", "LockTimeoutError"):
        return True
    had_whole_run = full_run and not answer.get("applied")
    return bool(answer.get("budget_cut") and answer.get("rolled_back") and not had_whole_run)


def direct(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """A read-only status, dry-run or lint for the CLI, or a rehearsal on a clone (scripts/rehearse.sh);
    always answers with a document, never raises."""
    action = event.get("action")
    if action not in ("status", "dry-run", "lint", "rehearse"):
        return {
            "ok": False,
            "error": f"unknown action {action!r}: this function answers status, dry-run, lint and rehearse "
            "(applying happens only through a deploy)",
            "kind": "RequestError",
        }
    request: dict[str, Any] = {"action": action}
    if action == "rehearse":  # the runner checks that clone_host is a clone, never the database
        request.update({key: event.get(key) for key in REHEARSAL_KEYS})
    try:
        answer = _run(request, context)[0]
    except MigrationDeployError as error:
        return {"ok": False, "error": str(error), "kind": type(error).__name__}
    if action == "status":  # lets scripts/rehearse.sh skip a clone when nothing changed
        answer["migrations_digest"] = build_manifest(MIGRATIONS_DIR).digest
    return answer


def failure_message(answer: dict[str, Any]) -> str:
    """`database/migrations/004_x.sql:3: 004_x failed: ...; 003_y applied earlier in this deploy`,
    then the details on one line; for a statement longer than a whole run, what to do about it."""
    lines = [line.strip() for line in str(answer.get("error") or "unknown error").splitlines() if line.strip()]
    applied = answer.get("applied") or []
    if applied and answer.get("kind") != "OutOfTimeError":  # that message counts them already
        lines[0] += f"; {', '.join(applied)} applied earlier in this deploy"
    if answer.get("budget_cut"):
        lines.insert(1, (
            f"one statement of {answer.get('failed') or 'this migration'} takes longer than a whole run of the "
            f"migration function ({_runner_timeout():.0f}s): build it outside the deploy (for an index, "
            "CREATE INDEX CONCURRENTLY with scripts/run-migrations.sh, then a migration with CREATE INDEX IF NOT "
            "EXISTS) or split the work into smaller migrations"
        ))  # fmt: skip
    return " | ".join(lines)


@dataclass(frozen=True)
class StackState:
    name: str
    status: str
    schema_version: str | None  # the stack's SchemaVersion output, from its last successful deploy

    @property
    def rolling_back(self) -> bool:
        return self.status.endswith("ROLLBACK_IN_PROGRESS")


def read_stack(stack_id: str) -> StackState:
    """The stack's status and SchemaVersion output (this function may describe its own stack only)."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    if not stack_id:
        raise MigrationDeployError("refused: the event names no StackId")
    config = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 5})
    client = boto3.client("cloudformation", config=config)
    try:
        [stack] = client.describe_stacks(StackName=stack_id)["Stacks"]
    except (BotoCoreError, ClientError, ValueError) as error:
        raise MigrationDeployError(
            f"refused: could not read the status of stack {stack_id} ({error}); migrations are applied only by a "
            "deploy in progress of this function's own stack"
        ) from None
    outputs = {output.get("OutputKey"): output.get("OutputValue") for output in stack.get("Outputs") or []}
    return StackState(str(stack["StackName"]), str(stack["StackStatus"]), outputs.get(SCHEMA_VERSION_OUTPUT))


def _check_digest(request: str, wanted: object) -> None:
    if not wanted:
        raise MigrationDeployError("the resource's properties lack MigrationsDigest: stack and function disagree")
    carried = build_manifest(MIGRATIONS_DIR).digest
    if wanted != carried:
        raise MigrationDeployError(
            f"refused: this {request} asks for migrations with digest {str(wanted)[:12]}, this function carries "
            f"{carried[:12]}: the template and the function's code come from different builds; synthesize and "
            "deploy again from one checkout"
        )


def _run(
    request: dict[str, Any], context: LambdaContext, deploy_left: float | None = None
) -> tuple[dict[str, Any], float]:
    """Invoke the runner function with the credentials (unless it reads the secret itself); its
    answer, and the seconds it was given."""
    secrets: list[str] = []
    if os.environ.get("SECRETS_IN_VPC") != "1":
        credentials = _read_secret(os.environ["DATABASE_SECRET_ARN"])
        secrets.append(str(credentials.get("password") or ""))
        request = {**request, "credentials": credentials}
    answer, budget = _invoke_runner(request, context, deploy_left)
    return scrub_document(answer, *secrets), budget  # type: ignore[return-value]


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


def _invoke_runner(
    request: dict[str, Any], context: LambdaContext, deploy_left: float | None
) -> tuple[dict[str, Any], float]:
    """One run of the runner, retrying (with backoff, inside this function's time) the invoke
    errors that come before its code runs; an Inactive function is woken and waited for. A read
    timeout or the function's own error is never retried: the runner may have been applying."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError, ConnectTimeoutError, EndpointConnectionError

    name = os.environ["RUNNER_FUNCTION_NAME"]
    deadline = time.monotonic() + min(_remaining(context), deploy_left if deploy_left is not None else float("inf"))
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        budget = deadline - time.monotonic() - INVOKE_RESERVE_SECONDS
        # No retries inside botocore: only the errors below are safe to retry, and they are retried here.
        config = Config(read_timeout=max(10.0, budget + 5), connect_timeout=10, retries={"total_max_attempts": 1})
        client = boto3.client("lambda", config=config)
        payload = {**request, "budget_seconds": budget}  # the runner answers before this function gives up
        try:
            response = client.invoke(FunctionName=name, InvocationType="RequestResponse",
                                     Payload=json.dumps(payload).encode())  # fmt: skip
            answer = json.loads(response["Payload"].read())
        except (ClientError, ConnectTimeoutError, EndpointConnectionError) as error:
            code = _error_code(error)
            if code is None or deadline - time.monotonic() - INVOKE_RESERVE_SECONDS < MIN_RUN_SECONDS:
                raise _invoke_failed(name, started, error) from None
            _log(f"⏳ invoking {name}: {code} (attempt {attempt}); trying again")
            if code == "ResourceNotReadyException":
                _wait_until_active(client, name, deadline)
            else:
                time.sleep(min(BACKOFF_CAP_SECONDS, 2**attempt, deadline - time.monotonic()) * random.uniform(0.5, 1))
            continue
        except (BotoCoreError, ValueError) as error:
            raise _invoke_failed(name, started, error) from None
        if response.get("FunctionError"):
            message = answer.get("errorMessage", answer) if isinstance(answer, dict) else answer
            raise MigrationDeployError(f"the migration function {name} failed: {message}")
        if not isinstance(answer, dict):
            raise MigrationDeployError(f"the migration function {name} answered {str(answer)[:200]!r}")
        return answer, budget


def _error_code(error: Exception) -> str | None:
    """The error's name when it happened before the runner ran (safe to retry), else None."""
    from botocore.exceptions import ClientError

    if not isinstance(error, ClientError):
        return type(error).__name__  # the connection was never made
    code = str(error.response.get("Error", {}).get("Code") or "")
    status = int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
    return code if code in NOT_STARTED_ERRORS or status >= 500 else None


def _wait_until_active(client: Any, name: str, deadline: float) -> None:
    """An Inactive function (weeks without a deploy) answers ResourceNotReadyException and starts
    coming back; Lambda's function_active_v2 waiter polls GetFunction until it is Active."""
    from botocore.exceptions import WaiterError

    delay = 2
    attempts = max(1, int((deadline - time.monotonic() - INVOKE_RESERVE_SECONDS - MIN_RUN_SECONDS) / delay))
    try:
        client.get_waiter("function_active_v2").wait(FunctionName=name, WaiterConfig={"Delay": delay,
                                                                                      "MaxAttempts": attempts})
    except WaiterError as error:
        raise MigrationDeployError(f"the migration function {name} did not become Active: {error}") from None


def _invoke_failed(name: str, started: float, error: Exception) -> MigrationDeployError:
    return MigrationDeployError(
        f"invoking the migration function {name} failed after {time.monotonic() - started:.0f}s: {error}"
    )


def _remaining(context: LambdaContext) -> float:
    return context.get_remaining_time_in_millis() / 1000


def _runner_timeout() -> float:
    """The runner function's timeout (its whole budget for one run)."""
    return float(os.environ.get("RUNNER_TIMEOUT_SECONDS") or 0) or float("inf")


def _data(schema_version: object, applied: list[str], *, rollback: bool) -> dict[str, str]:
    if rollback:
        applied_text = ROLLBACK_ANSWER
    elif applied:
        applied_text = _fit_list(applied, APPLIED_BYTES)
    else:
        applied_text = "none"
    return {
        "SchemaVersion": str(schema_version) if schema_version and schema_version != "none" else "none",
        "AppliedThisDeploy": applied_text,
        "AppliedCount": str(len(applied)),
    }


def _fit_list(versions: list[str], limit: int) -> str:
    """Comma-separated versions; past the limit (UTF-8 bytes), the newest are kept and the rest counted."""
    text = ",".join(versions)
    if json_bytes(text) <= limit:
        return text
    kept: list[str] = []
    for version in reversed(versions):
        if json_bytes(",".join([version, *kept])) + 30 > limit:
            break
        kept.insert(0, version)
    return f"({len(versions) - len(kept)} earlier),{','.join(kept)}"


def json_bytes(text: str) -> int:
    """The size of ``text`` in a JSON document, in UTF-8 bytes (what CloudFormation's limits count)."""
    return len(json.dumps(text, ensure_ascii=False).encode())


def fit_bytes(text: str, limit: int) -> str:
    """``text``, cut (with "…") so that it takes at most ``limit`` bytes in a JSON document."""
    if json_bytes(text) <= limit:
        return text
    low, high = 0, len(text)  # the longest prefix that fits with the ellipsis
    while low < high:
        middle = (low + high + 1) // 2
        if json_bytes(text[:middle] + "…") <= limit:
            low = middle
        else:
            high = middle - 1
    return text[:low] + "…"


def _log(line: str) -> None:
    print(line, flush=True)
