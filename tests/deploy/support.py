"""Stand-ins for what the deploy-time functions meet in AWS, all real at the network level:

- ``LocalAws``: an HTTP server speaking the Lambda Invoke REST API (POST
  /2015-03-31/functions/{name}/invocations), Secrets Manager's GetSecretValue (answered from
  moto in this process) and CloudFormation's DescribeStacks (the stacks' outputs). boto3 reaches it
  through AWS_ENDPOINT_URL_LAMBDA / AWS_ENDPOINT_URL_SECRETS_MANAGER /
  AWS_ENDPOINT_URL_CLOUDFORMATION, so the functions' and the CLI's code run unchanged.
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
        self.invocations: list[tuple[str, dict[str, Any]]] = []
        self.secrets_read = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
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

            def _describe_stack(self, name: str) -> None:
                """CloudFormation's query-protocol answer (XML), as the real service gives it."""
                outputs = owner.stack_outputs.get(name)
                if outputs is None:
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
                    "<CreationTime>2026-11-25T09:00:00Z</CreationTime><StackStatus>UPDATE_COMPLETE</StackStatus>"
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

    def __enter__(self) -> LocalAws:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA (ca.crt) and a server certificate/key it signed for 127.0.0.1 and localhost."""
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
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
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
