"""Status, dry-run and lint of a deployed environment, from a laptop with AWS credentials.

The database sits in isolated subnets, so the CLI does not connect to it: it finds the
environment's stack, then invokes the deploy-time migration function (stack output
``MigrationFunctionName``), which reads the secret and asks the in-VPC runner for a read-only
status. The answer is rendered exactly like a local status. Applying is never done this way: it
happens only through a deploy.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from database.migrator.errors import ConnectionFailedError, MigrationError

if TYPE_CHECKING:
    from database.migrator.orchestration import Status

FUNCTION_OUTPUT = "MigrationFunctionName"
STACK_PREFIX = "PgSchemaDeploy-"  # stacks/settings.py PROJECT_NAME; not imported: it would pull in the CDK settings

# The runner's error kinds that keep their exit status when they come back through the function.
_EXIT_CODES = {"InvalidMigrationError": 2, "ConnectionFailedError": 3, "LockTimeoutError": 4}


class DeployedEnvironmentError(ConnectionFailedError):
    """The deployed environment could not be asked: credentials, region, stack or function."""


@dataclass(frozen=True)
class DeployedStatus:
    status: Status | None  # None for lint
    server_version: str | None
    notices: list[str]
    function_name: str
    region: str
    findings: list[dict[str, Any]]  # --lint: the pending files' findings, judged by the live table sizes


class _RemoteError(MigrationError):
    """An error the deployed function reported, with the exit status its kind has locally."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_deployed_status(environment: str, mode: str) -> DeployedStatus:
    """Ask the environment's deployed migration function for its status (``mode``: status, dry-run
    or lint)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    from database.cli.aws_setup import setup_problem
    from database.migrator.report import status_from_dict

    stack = f"{STACK_PREFIX}{environment}"
    try:
        # AWS_REGION first, as the CDK CLI and scripts/deploy.sh read it; then the SDK's own sources.
        session = boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)
        region = session.region_name
    except BotoCoreError as error:  # a missing profile or a malformed config file
        raise DeployedEnvironmentError(f"--environment {environment}: {setup_problem(error) or error}") from None
    if not region:
        raise DeployedEnvironmentError(
            f"--environment {environment}: no AWS region configured; set AWS_REGION (or a profile's region) "
            f"to the region {stack} is deployed in"
        )
    try:
        function_name = _function_name(session.client("cloudformation"), stack, region)
        response = session.client("lambda").invoke(
            FunctionName=function_name, InvocationType="RequestResponse", Payload=json.dumps({"action": mode})
        )
        answer = json.loads(response["Payload"].read())
    except ClientError as error:
        raise DeployedEnvironmentError(_client_error_message(error, environment, stack, region)) from None
    except (BotoCoreError, ValueError) as error:
        reason = setup_problem(error) or f"AWS request failed: {error}"
        raise DeployedEnvironmentError(f"--environment {environment}: {reason}") from None
    if response.get("FunctionError"):
        message = answer.get("errorMessage", answer) if isinstance(answer, dict) else answer
        raise DeployedEnvironmentError(f"the migration function {function_name} failed: {message}")
    if not isinstance(answer, dict):
        raise DeployedEnvironmentError(f"the migration function {function_name} answered {str(answer)[:200]!r}")
    if not answer.get("ok"):
        kind = str(answer.get("kind") or "")
        raise _RemoteError(
            f"{environment} ({function_name}): {answer.get('error') or 'unknown error'}", _EXIT_CODES.get(kind, 1)
        )
    return DeployedStatus(
        status=status_from_dict(answer["status"]) if "status" in answer else None,
        server_version=answer.get("server_version"),
        notices=[str(notice) for notice in answer.get("notices") or []],
        function_name=function_name,
        region=region,
        findings=[dict(finding) for finding in answer.get("findings") or []],
    )


def _function_name(cloudformation: Any, stack: str, region: str) -> str:
    stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    outputs = {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs") or []}
    if FUNCTION_OUTPUT not in outputs:
        raise DeployedEnvironmentError(
            f"stack {stack} in {region} has no {FUNCTION_OUTPUT} output: it was deployed before deploy-time "
            f"migrations existed; deploy it again (scripts/deploy.sh {stack.removeprefix(STACK_PREFIX)})"
        )
    return str(outputs[FUNCTION_OUTPUT])


def _client_error_message(error: Any, environment: str, stack: str, region: str) -> str:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", str(error))
    operation = getattr(error, "operation_name", "")
    if operation == "DescribeStacks" and code == "ValidationError" and "does not exist" in message:
        return (
            f"--environment {environment}: stack {stack} does not exist in {region} for these credentials; "
            f"deploy it first (scripts/deploy.sh {environment}) or set AWS_REGION to where it is"
        )
    if code in ("AccessDenied", "AccessDeniedException", "AccessDeniedError"):
        needed = "cloudformation:DescribeStacks" if operation == "DescribeStacks" else "lambda:InvokeFunction"
        return f"--environment {environment}: not allowed ({code}): reading the status needs {needed}: {message}"
    return f"--environment {environment}: {operation or 'AWS'} failed ({code}): {message}"

