"""`scripts/run-migrations.sh --status|--dry-run --environment testing` from a laptop: the real CLI
in its own process finds the stack's output (CloudFormation DescribeStacks), invokes the deploy
function (Lambda Invoke), which reads the secret and asks the in-VPC runner, against a real
PostgreSQL over TLS. Only the AWS endpoints are stand-ins (tests/deploy/support.LocalAws)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from schema_migrations import deploy

from database.postgres_version import POSTGRES_VERSION
from tests.aws_setup_mistakes import MISTAKES, aws_home_with
from tests.deploy.conftest import PASSWORD, REGION, Deployment
from tests.deploy.support import FakeContext

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLI = PROJECT_ROOT / "scripts" / "run-migrations.sh"
DEPLOY_FUNCTION = "pg-schema-deploy-testing-migrate"
FIRST = {
    "001_create_users.sql": "CREATE TABLE users (id serial PRIMARY KEY, email text NOT NULL);\n",
    "002_add_name.sql": "ALTER TABLE users ADD COLUMN name text;\n",
}
THIRD = {"003_add_phone.sql": "ALTER TABLE users ADD COLUMN phone text;\n"}


@pytest.fixture
def laptop(deployment: Deployment, tmp_path: Path) -> dict[str, str]:
    """The environment of a laptop with AWS credentials, pointed at the stand-in endpoints, and the
    testing stack deployed with its migration function."""

    def deploy_function(payload: dict[str, Any]) -> tuple[Any, bool]:
        return deploy.handler(payload, FakeContext(60, DEPLOY_FUNCTION)), False

    deployment.aws.functions[DEPLOY_FUNCTION] = deploy_function
    deployment.aws.stack_outputs["PgSchemaDeploy-testing"] = {"MigrationFunctionName": DEPLOY_FUNCTION}
    keep = ("PATH", "HOME", "LANG", "LC_ALL", "PYTHONPATH")
    return {
        **{key: os.environ[key] for key in keep if key in os.environ},
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_CLOUDFORMATION": deployment.aws.url,
        "AWS_ENDPOINT_URL_LAMBDA": deployment.aws.url,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
    }


def run_cli(environment: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *arguments], env=environment, capture_output=True, text=True, timeout=120, check=False
    )


def test_status_of_a_deployed_environment_reads_like_a_local_status(
    deployment: Deployment, laptop: dict[str, str]
) -> None:
    deployment.write(FIRST)
    deployment.create()
    deployment.write(THIRD)

    shown = run_cli(laptop, "--status", "--environment", "testing")

    assert shown.returncode == 0, shown.stderr
    for line in (
        f"✅ Database connection successful (PostgreSQL {POSTGRES_VERSION})",
        "📊 Migration Status",
        "✅ Applied Migrations:",
        "  • 001_create_users",
        "⏳ Pending Migrations:",
        "  • 003_add_phone",
    ):
        assert line in shown.stdout
    assert DEPLOY_FUNCTION in shown.stdout  # says where the answer came from
    assert PASSWORD not in shown.stdout + shown.stderr
    assert deployment.applied_versions() == ["001_create_users", "002_add_name"]


def test_dry_run_and_json_of_a_deployed_environment(deployment: Deployment, laptop: dict[str, str]) -> None:
    deployment.write(FIRST)
    deployment.create()
    deployment.write(THIRD)

    planned = run_cli(laptop, "--dry-run", "--environment", "testing")
    document = run_cli(laptop, "--status", "--json", "--environment", "testing")

    assert planned.returncode == 0, planned.stderr
    assert "1 migration(s) would be applied" in planned.stdout and "003_add_phone" in planned.stdout
    assert document.returncode == 0, document.stderr
    parsed = json.loads(document.stdout)
    assert parsed["ok"] is True and parsed["mode"] == "status"
    assert parsed["environment"] == "testing" and parsed["server_version"] == POSTGRES_VERSION
    assert [item["version"] for item in parsed["pending"]] == ["003_add_phone"]
    assert deployment.applied_versions() == ["001_create_users", "002_add_name"]  # read-only, both


def test_applying_to_a_deployed_environment_is_refused_before_any_aws_call(
    deployment: Deployment, laptop: dict[str, str]
) -> None:
    refused = run_cli(laptop, "--environment", "testing")

    assert refused.returncode == 2
    assert "through a deploy" in refused.stderr and "scripts/deploy.sh testing" in refused.stderr
    assert deployment.aws.invocations == []


def test_missing_stack_and_missing_credentials_are_one_clear_line(
    deployment: Deployment, laptop: dict[str, str]
) -> None:
    no_stack = run_cli(laptop, "--status", "--environment", "production")
    without_keys = {key: value for key, value in laptop.items() if not key.startswith("AWS_ACCESS_KEY_ID")}
    no_credentials = run_cli({**without_keys, "AWS_SECRET_ACCESS_KEY": ""}, "--status", "--environment", "testing")

    assert no_stack.returncode == 3
    assert "stack PgSchemaDeploy-production does not exist in eu-west-1" in no_stack.stderr
    assert no_credentials.returncode == 3 and "no AWS credentials" in no_credentials.stderr
    for result in (no_stack, no_credentials):
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_an_aws_setup_mistake_is_one_line_or_one_json_document(mistake: str, tmp_path: Path) -> None:
    """No request leaves the machine: botocore stops on the files in the temporary HOME."""
    environment, expected = aws_home_with(MISTAKES[mistake], tmp_path / "home", dict(os.environ))
    shown = run_cli(environment, "--status", "--environment", "testing")
    as_json = run_cli(environment, "--dry-run", "--json", "--environment", "production")

    assert shown.returncode == as_json.returncode == 3
    assert "Traceback" not in shown.stderr and len(shown.stderr.strip().splitlines()) == 1
    document = json.loads(as_json.stdout)
    assert document["ok"] is False and document["error"]["exit_code"] == 3
    for text in expected:
        assert text in shown.stderr and text in document["error"]["message"]


def test_an_unreachable_database_is_reported_with_its_exit_status(
    deployment: Deployment, laptop: dict[str, str]
) -> None:
    deployment.write(FIRST)
    deployment.point_at_port(1)
    deployment.runner_seconds = 35  # connect retries end well before: a few seconds

    failed = run_cli(laptop, "--status", "--json", "--environment", "testing")

    assert failed.returncode == 3
    parsed = json.loads(failed.stdout)
    assert parsed["ok"] is False and "could not connect" in parsed["error"]["message"]
    assert PASSWORD not in failed.stdout + failed.stderr
