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


class StackNotDeployedError(DeployedEnvironmentError):
    """The environment's stack does not exist (yet) in this account and region."""


class _RemoteError(MigrationError):
    """An error the deployed function reported, with the exit status its kind has locally."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def read_deployed_status(environment: str, mode: str) -> DeployedStatus:
    """Ask the environment's deployed migration function for its status (``mode``: status, dry-run
    or lint)."""
    from database.migrator.report import status_from_dict

    target = DeployedTarget.find(environment)
    answer = target.invoke({"action": mode})
    if not answer.get("ok"):
        kind = str(answer.get("kind") or "")
        raise _RemoteError(
            f"{environment} ({target.function_name}): {answer.get('error') or 'unknown error'}",
            _EXIT_CODES.get(kind, 1),
        )
    return DeployedStatus(
        status=status_from_dict(answer["status"]) if "status" in answer else None,
        server_version=answer.get("server_version"),
        notices=[str(notice) for notice in answer.get("notices") or []],
        function_name=target.function_name,
        region=target.region,
        findings=[dict(finding) for finding in answer.get("findings") or []],
    )


@dataclass(frozen=True)
class DeployedTarget:
    """A deployed environment as the CLI reaches it: an AWS session in its region, its stack's
    outputs and its migration function."""

    environment: str
    session: Any  # boto3.session.Session
    region: str
    outputs: dict[str, str]
    label: str  # how errors name the target: "--environment testing" for run-migrations.sh

    @property
    def stack(self) -> str:
        return f"{STACK_PREFIX}{self.environment}"

    @property
    def function_name(self) -> str:
        if FUNCTION_OUTPUT not in self.outputs:
            raise DeployedEnvironmentError(
                f"stack {self.stack} in {self.region} has no {FUNCTION_OUTPUT} output: it was deployed before "
                f"deploy-time migrations existed; deploy it again (scripts/deploy.sh {self.environment})"
            )
        return self.outputs[FUNCTION_OUTPUT]

    @classmethod
    def find(cls, environment: str, label: str | None = None) -> DeployedTarget:
        """The session (AWS_REGION first, as the CDK CLI and scripts/deploy.sh read it; then the
        SDK's own sources) and the stack's outputs."""
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        from database.cli.aws_setup import setup_problem

        stack = f"{STACK_PREFIX}{environment}"
        label = label or f"--environment {environment}"
        try:
            session = boto3.session.Session(region_name=os.environ.get("AWS_REGION") or None)
            region = session.region_name
        except BotoCoreError as error:  # a missing profile or a malformed config file
            raise DeployedEnvironmentError(f"{label}: {setup_problem(error) or error}") from None
        if not region:
            raise DeployedEnvironmentError(
                f"{label}: no AWS region configured; set AWS_REGION (or a profile's region) "
                f"to the region {stack} is deployed in"
            )
        try:
            stacks = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
        except ClientError as error:
            message = client_error_message(error, label, environment, stack, region)
            code = error.response.get("Error", {}).get("Code")
            missing = code == "ValidationError" and "does not exist" in str(error)
            raise (StackNotDeployedError if missing else DeployedEnvironmentError)(message) from None
        except (BotoCoreError, ValueError) as error:
            reason = setup_problem(error) or f"AWS request failed: {error}"
            raise DeployedEnvironmentError(f"{label}: {reason}") from None
        outputs = {str(out["OutputKey"]): str(out["OutputValue"]) for out in stacks[0].get("Outputs") or []}
        return cls(environment, session, str(region), outputs, label)

    def invoke(self, payload: dict[str, Any], read_timeout: float = 60.0, *, retry: bool = True) -> dict[str, Any]:
        """The migration function's answer to ``payload`` (a document with ``ok``); ``retry``: let the
        SDK repeat a call that failed or timed out (not for a rehearsal, which would run twice)."""
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        from database.cli.aws_setup import setup_problem

        name = self.function_name
        config = Config(read_timeout=read_timeout, retries=None if retry else {"total_max_attempts": 1})
        try:
            response = self.session.client("lambda", config=config).invoke(
                FunctionName=name, InvocationType="RequestResponse", Payload=json.dumps(payload)
            )
            answer = json.loads(response["Payload"].read())
        except ClientError as error:
            raise DeployedEnvironmentError(
                client_error_message(error, self.label, self.environment, self.stack, self.region)
            ) from None
        except (BotoCoreError, ValueError) as error:
            reason = setup_problem(error) or f"AWS request failed: {error}"
            raise DeployedEnvironmentError(f"{self.label}: {reason}") from None
        if response.get("FunctionError"):
            message = answer.get("errorMessage", answer) if isinstance(answer, dict) else answer
            raise DeployedEnvironmentError(f"the migration function {name} failed: {message}")
        if not isinstance(answer, dict):
            raise DeployedEnvironmentError(f"the migration function {name} answered {str(answer)[:200]!r}")
        return answer


def client_error_message(error: Any, label: str, environment: str, stack: str, region: str) -> str:
    code = error.response.get("Error", {}).get("Code", "")
    message = error.response.get("Error", {}).get("Message", str(error))
    operation = getattr(error, "operation_name", "")
    if operation == "DescribeStacks" and code == "ValidationError" and "does not exist" in message:
        return (
            f"{label}: stack {stack} does not exist in {region} for these credentials; "
            f"deploy it first (scripts/deploy.sh {environment}) or set AWS_REGION to where it is"
        )
    if code in ("AccessDenied", "AccessDeniedException", "AccessDeniedError"):
        needed = "cloudformation:DescribeStacks" if operation == "DescribeStacks" else "lambda:InvokeFunction"
        return f"{label}: not allowed ({code}): this needs {needed}: {message}"
    return f"{label}: {operation or 'AWS'} failed ({code}): {message}"

