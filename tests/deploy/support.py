"""Stand-ins for what the deploy-time functions meet in AWS, all real at the network level:

- ``LocalAws``: an HTTP server speaking the Lambda Invoke REST API (POST
  /2015-03-31/functions/{name}/invocations) and GetFunction (the function's State), Secrets
  Manager's GetSecretValue (answered from moto in this process) and CloudFormation's
  DescribeStacks (the stacks' status and outputs, by name or stack id). boto3 reaches it through
  AWS_ENDPOINT_URL_LAMBDA / AWS_ENDPOINT_URL_SECRETS_MANAGER / AWS_ENDPOINT_URL_CLOUDFORMATION, so
  the functions' and the CLI's code run unchanged. Invoke can be told to fail first the way Lambda
  does before a function runs (429 TooManyRequestsException, 502 ResourceNotReadyException for an
  Inactive function, which then comes back through Pending to Active).
- ``ProviderFramework``: what the CDK Provider framework does with an on_event / is_complete
  handler, down to the response body it PUTs to CloudFormation.
- ``make_tls_files``: a test CA and a server certificate for 127.0.0.1, so the runner's
  sslmode=verify-full is exercised as in AWS, against a test CA instead of Amazon's.
- CloudFormation-shaped events as the Provider framework hands them to its on_event handler.
"""

from __future__ import annotations

import datetime
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape

from database.migrator.manifest import build_manifest

STACK_ID = "arn:aws:cloudformation:eu-west-1:123456789012:stack/PgSchemaDeploy-testing/4a5b6c7d"
SERVICE_TOKEN = "arn:aws:lambda:eu-west-1:123456789012:function:PgSchemaDeploy-testing-framework-onEvent"

# A function: payload -> (answer, function_error). function_error mirrors Lambda's "Unhandled".
LocalFunction = Callable[[dict[str, Any]], tuple[Any, bool]]


class FakeContext:
    """The part of Lambda's context object the handlers use: the remaining time."""

    def __init__(self, seconds: float, function_name: str = "function") -> None:
        self.deadline = time.monotonic() + seconds
        self.function_name = function_name
        self.aws_request_id = str(uuid.uuid4())

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.monotonic()) * 1000))


def resource_properties(
    migrations_dir: Path, *, database: str = "pgschemadeploy-testing-cluster", environment: str = "testing"
) -> dict[str, Any]:
    """The custom resource's properties as the contract has the CDK app compute them."""
    manifest = build_manifest(migrations_dir)
    return {
        "ServiceToken": SERVICE_TOKEN,
        "DatabaseRoles": {"Application": "webapp_app", "ReadOnly": "webapp_readonly"},
        "Database": database,
        "MigrationsDigest": manifest.digest,
        "MigrationCount": str(manifest.count),
        "LatestMigration": manifest.latest or "none",
        "Migrations": manifest.recent,
        "Environment": environment,
    }


def cfn_event(
    request_type: str,
    properties: dict[str, Any],
    *,
    old_properties: dict[str, Any] | None = None,
    physical_id: str | None = None,
) -> dict[str, Any]:
    """A CloudFormation custom-resource request as the Provider framework passes it on."""
    event: dict[str, Any] = {
        "RequestType": request_type,
        "ServiceToken": SERVICE_TOKEN,
        "ResponseURL": "https://cloudformation-custom-resource-response-euwest1.s3.amazonaws.com/presigned",
        "StackId": STACK_ID,
        "RequestId": str(uuid.uuid4()),
        "LogicalResourceId": "SchemaMigrations",
        "ResourceType": "Custom::SchemaMigrations",
        "ResourceProperties": properties,
    }
    if request_type != "Create":
        event["PhysicalResourceId"] = physical_id or f"schema-migrations-{properties['Environment']}"
    if request_type == "Update":
        event["OldResourceProperties"] = old_properties or {}
    return event


class LocalAws:
    """Lambda Invoke, Secrets Manager GetSecretValue and CloudFormation DescribeStacks over HTTP
    on 127.0.0.1."""

    def __init__(self) -> None:
        self.functions: dict[str, LocalFunction] = {}
        self.stack_outputs: dict[str, dict[str, str]] = {}  # stack name -> its outputs
        self.stack_status: dict[str, str] = {}  # stack name -> its status (default UPDATE_COMPLETE)
        self.invocations: list[tuple[str, dict[str, Any]]] = []
        self.invoke_errors: list[tuple[int, str]] = []  # answered, in order, before any function runs
        self.refused_invocations: list[str] = []  # the error codes answered
        self.function_state: dict[str, str] = {}  # Active unless said otherwise
        self.pending_polls = 2  # GetFunction answers Pending this often before Active
        self.state_polls: list[str] = []
        self.secrets_read = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                match = re.fullmatch(r"/2015-03-31/functions/([^/]+)", self.path.split("?")[0])
                if not match:
                    self._answer(400, {"__type": "UnknownOperationException", "message": self.path})
                    return
                name = unquote(match.group(1))
                state = owner.function_state.get(name, "Active")
                owner.state_polls.append(state)
                if state == "Pending" and owner.state_polls.count("Pending") >= owner.pending_polls:
                    owner.function_state[name] = "Active"
                self._answer(200, {"Configuration": {"FunctionName": name, "State": state}})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                match = re.fullmatch(r"/2015-03-31/functions/([^/]+)/invocations", self.path.split("?")[0])
                if match:
                    self._invoke(unquote(match.group(1)), body)
                elif (self.headers.get("X-Amz-Target") or "") == "secretsmanager.GetSecretValue":
                    self._get_secret(json.loads(body))
                elif parse_qs(body.decode()).get("Action") == ["DescribeStacks"]:
                    self._describe_stack(parse_qs(body.decode())["StackName"][0])
                else:
                    self._answer(400, {"__type": "UnknownOperationException", "message": self.path})

            def _invoke(self, name: str, body: bytes) -> None:
                function = owner.functions.get(name)
                if function is None:
                    self._answer(404, {"Type": "User", "Message": f"Function not found: {name}"},
                                 {"X-Amzn-ErrorType": "ResourceNotFoundException"})  # fmt: skip
                    return
                refusal = owner.refusal(name)
                if refusal is not None:
                    status, code = refusal
                    owner.refused_invocations.append(code)
                    self._answer(status, {"Type": "User" if status < 500 else "Service", "message": code},
                                 {"X-Amzn-ErrorType": code})  # fmt: skip
                    return
                payload = json.loads(body or b"{}")
                owner.invocations.append((name, payload))
                answer, failed = function(payload)
                headers = {"X-Amz-Executed-Version": "$LATEST"}
                if failed:
                    headers["X-Amz-Function-Error"] = "Unhandled"
                self._answer(200, answer, headers)

            def _get_secret(self, request: dict[str, Any]) -> None:
                import boto3  # served by moto, active in the test process

                owner.secrets_read += 1
                value = boto3.client("secretsmanager", region_name="eu-west-1").get_secret_value(
                    SecretId=request["SecretId"]
                )
                self._answer(200, {
                    "ARN": value["ARN"], "Name": value["Name"], "VersionId": value["VersionId"],
                    "SecretString": value["SecretString"], "VersionStages": value["VersionStages"],
                    "CreatedDate": value["CreatedDate"].timestamp(),
                })  # fmt: skip

            def _describe_stack(self, name_or_id: str) -> None:
                """CloudFormation's query-protocol answer (XML), as the real service gives it."""
                name = name_or_id.split(":stack/")[-1].split("/")[0]
                outputs = owner.stack_outputs.get(name)
                if outputs is None or (name_or_id.startswith("arn:") and name_or_id != STACK_ID):
                    error = (
                        "<ErrorResponse><Error><Type>Sender</Type><Code>ValidationError</Code>"
                        f"<Message>Stack with id {escape(name)} does not exist</Message></Error></ErrorResponse>"
                    )
                    self._answer(400, error, content_type="text/xml")
                    return
                members = "".join(
                    f"<member><OutputKey>{escape(key)}</OutputKey><OutputValue>{escape(value)}</OutputValue></member>"
                    for key, value in outputs.items()
                )
                stack = (
                    f"<member><StackName>{escape(name)}</StackName><StackId>{STACK_ID}</StackId>"
                    "<CreationTime>2026-11-25T09:00:00Z</CreationTime>"
                    f"<StackStatus>{owner.stack_status.get(name, 'UPDATE_COMPLETE')}</StackStatus>"
                    f"<Outputs>{members}</Outputs></member>"
                )
                document = (
                    '<DescribeStacksResponse xmlns="http://cloudformation.amazonaws.com/doc/2010-05-15/">'
                    f"<DescribeStacksResult><Stacks>{stack}</Stacks></DescribeStacksResult>"
                    "</DescribeStacksResponse>"
                )
                self._answer(200, document, content_type="text/xml")

            def _answer(
                self,
                status: int,
                document: Any,
                headers: dict[str, str] | None = None,
                content_type: str = "application/json",
            ) -> None:
                data = document.encode() if isinstance(document, str) else json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def refusal(self, name: str) -> tuple[int, str] | None:
        """The error Lambda answers an invoke with before the function runs, if any: a scripted
        one, or ResourceNotReadyException for an Inactive function (which then starts coming back)."""
        if self.invoke_errors:
            return self.invoke_errors.pop(0)
        state = self.function_state.get(name, "Active")
        if state == "Inactive":
            self.function_state[name] = "Pending"
        if state != "Active":
            return 502, "ResourceNotReadyException"
        return None

    def __enter__(self) -> LocalAws:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# The DNS domain of a test account's Aurora endpoints: <cluster>.cluster-<account's id>.<region>.rds.amazonaws.com.
RDS_DOMAIN = "cluster-t3stacc0unt1.eu-west-1.rds.amazonaws.com"


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA (ca.crt) and a server certificate/key it signed for 127.0.0.1, localhost and the
    test account's Aurora endpoints (RDS_DOMAIN)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pg-schema-deploy test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.DNSName("localhost"),
                    x509.DNSName(f"*.{RDS_DOMAIN}"),  # cluster endpoints and their clones' (test_rehearsal_clone)
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "ca.crt", directory / "server.crt", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(server.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


# Node's stack frames that the framework's Error adds to a failure's Reason (includeStackTraces is
# on): ten frames, the most Node records, each as long as the framework's own ones or longer.
FRAMEWORK_FRAMES = "".join(
    f"\n    at async invokeUserFunction (/var/task/framework.js:1:{5000 + frame}) [node:internal/process/task_queues]"
    for frame in range(10)
)
RESPONSE_LIMIT_BYTES = 4096  # CloudFormation refuses a longer response ("Response object is too long")


@dataclass
class FrameworkResponse:
    """The body the framework PUTs to CloudFormation's response URL, and what led to it."""

    body: dict[str, Any]
    error: str | None  # the handler's own message, when it failed
    is_complete_calls: int

    @property
    def status(self) -> str:
        return str(self.body["Status"])

    @property
    def data(self) -> dict[str, Any]:
        return dict(self.body.get("Data") or {})

    @property
    def size(self) -> int:
        """The body's size in UTF-8 bytes, as JSON.stringify writes it."""
        return len(json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode())


class ProviderFramework:
    """The CDK Provider framework (aws-cdk-lib 2.275, custom-resources/lib/provider-framework/runtime/
    framework.js) around one user function that is both on_event and is_complete handler: onEvent
    merges the handler's answer into the event, the waiter calls isComplete until it says
    IsComplete (at most ``max_attempts`` times), and the response carries the merged Data; a
    handler error becomes Reason = "Error: <message>\\n\\nLogs: /aws/lambda/<name>\\n" and the stack."""

    def __init__(self, user_function: Callable[[dict[str, Any]], dict[str, Any]], function_name: str,
                 max_attempts: int = 50) -> None:  # fmt: skip
        self.user_function = user_function
        self.function_name = function_name
        self.max_attempts = max_attempts

    def run(self, request: dict[str, Any]) -> FrameworkResponse:
        event = dict(request)
        calls = 0
        try:
            answer = self.user_function({**event, "ResponseURL": "..."})
            event = {**event, **answer, "PhysicalResourceId": answer.get("PhysicalResourceId")
                     or event.get("PhysicalResourceId") or event["RequestId"]}  # fmt: skip
            while True:
                if calls == self.max_attempts:
                    return self._respond("FAILED", event, "Operation timed out", None, calls)
                calls += 1
                result = self.user_function({**event, "ResponseURL": "..."})
                if result.get("IsComplete"):
                    break
                if result.get("Data"):
                    raise RuntimeError('"Data" is not allowed if "IsComplete" is "False"')
            event = {**event, **result, "Data": {**(event.get("Data") or {}), **(result.get("Data") or {})}}
            return self._respond("SUCCESS", event, "SUCCESS", None, calls)
        except Exception as error:  # Lambda turns it into errorMessage; the framework into the Reason
            if not event.get("PhysicalResourceId") and event["RequestType"] == "Create":
                event["PhysicalResourceId"] = "AWSCDK::CustomResourceProviderFramework::CREATE_FAILED"
            reason = f"Error: {error}\n\nLogs: /aws/lambda/{self.function_name}\n{FRAMEWORK_FRAMES}"
            return self._respond("FAILED", event, reason, str(error), calls)

    @staticmethod
    def _respond(status: str, event: dict[str, Any], reason: str, error: str | None, calls: int) -> FrameworkResponse:
        body = {
            "Status": status, "Reason": reason, "StackId": event["StackId"], "RequestId": event["RequestId"],
            "PhysicalResourceId": event.get("PhysicalResourceId"), "LogicalResourceId": event["LogicalResourceId"],
            "NoEcho": None, "Data": event.get("Data"),
        }  # fmt: skip
        return FrameworkResponse(body, error, calls)


def failed(response: FrameworkResponse) -> str:
    """The handler's message of a failed request; the response CloudFormation gets fits its limit."""
    assert response.status == "FAILED", response.body
    assert response.size < RESPONSE_LIMIT_BYTES
    assert response.error is not None and response.error in response.body["Reason"]
    return response.error
