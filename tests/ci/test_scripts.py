"""scripts/deploy.sh, diff.sh, destroy.sh without AWS: each failure is one clear line and a non-zero
exit; plus the readers of the CDK CLI's output that feed the reports."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from stacks.cli import cdk_commands, cdk_report
from stacks.cli.cdk_commands import what_stays
from stacks.settings import ENVIRONMENTS
from tests.aws_setup_mistakes import MISTAKES, aws_home_with

from .conftest import ROOT

FAKE_AWS = Path(__file__).parent / "fake_aws"


def no_aws_environment(tmp_path: Path) -> dict[str, str]:
    """The process environment with every way of finding AWS credentials cut off."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "CDK_", "GITHUB_")) and k not in ("PYTHONPATH",)
    }
    environment.update(
        AWS_CONFIG_FILE=str(tmp_path / "no-config"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "no-credentials"),
        AWS_EC2_METADATA_DISABLED="true",
    )
    return environment


def run(script: str, *arguments: str, environment: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(ROOT / "scripts" / script), *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(completed: subprocess.CompletedProcess[str], prefix: str) -> str:
    lines = [line for line in completed.stderr.splitlines() if not line.startswith("setup: ")]
    assert len(lines) == 1, completed.stderr
    assert lines[0].startswith(prefix), lines[0]
    return lines[0]


@pytest.mark.parametrize("script", ["deploy.sh", "diff.sh", "destroy.sh"])
def test_unknown_environment(script: str, tmp_path: Path) -> None:
    completed = run(script, "staging", environment=no_aws_environment(tmp_path))
    assert completed.returncode == 2
    command = script.removesuffix(".sh")
    assert one_line_error(completed, f"{command}: ") == (
        f"{command}: unknown environment 'staging': allowed are {', '.join(ENVIRONMENTS)}"
    )


@pytest.mark.parametrize("script", ["deploy.sh", "diff.sh", "destroy.sh"])
def test_no_credentials(script: str, tmp_path: Path) -> None:
    environment = {**no_aws_environment(tmp_path), "AWS_REGION": "eu-west-1"}
    completed = run(script, "testing", environment=environment)
    assert completed.returncode == 1
    assert "no AWS credentials found: run `aws configure`" in one_line_error(completed, script.removesuffix(".sh"))


@pytest.mark.parametrize("script", ["deploy.sh", "diff.sh", "destroy.sh"])
@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_an_aws_setup_mistake_is_one_line_naming_the_profile_or_file(script: str, mistake: str, tmp_path: Path) -> None:
    environment, expected = aws_home_with(MISTAKES[mistake], tmp_path / "home", no_aws_environment(tmp_path))
    completed = run(script, "testing", environment={**environment, "AWS_REGION": "eu-west-1"})
    assert completed.returncode == 1
    line = one_line_error(completed, f"{script.removesuffix('.sh')}: ")
    for text in expected:
        assert text in line


@pytest.mark.parametrize("script", sorted(path.name for path in (ROOT / "scripts").glob("*.sh")))
def test_help_prints_usage_and_does_nothing_else(script: str, tmp_path: Path) -> None:
    environment = {**no_aws_environment(tmp_path), "CDK_OUTDIR": str(tmp_path / "cdk.out"),
                   "LOCAL_PG_DIR": str(tmp_path / "postgres")}
    for flag in ("--help", "-h"):
        completed = run(script, flag, environment=environment)
        assert completed.returncode == 0, completed.stderr
        assert completed.stdout.strip(), f"{script} {flag} printed no usage"
    assert not (tmp_path / "cdk.out").exists() and not (tmp_path / "postgres").exists()


def test_no_region(tmp_path: Path) -> None:
    completed = run("deploy.sh", "testing", environment=no_aws_environment(tmp_path))
    assert completed.returncode == 1
    assert one_line_error(completed, "deploy: no AWS region: set AWS_REGION")


def fake_aws_environment(tmp_path: Path, bootstrap_version: str | None) -> dict[str, str]:
    environment = no_aws_environment(tmp_path)
    environment.update(
        PYTHONPATH=str(FAKE_AWS),
        AWS_REGION="eu-west-1",
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
    )
    if bootstrap_version is not None:
        environment["FAKE_CDK_BOOTSTRAP_VERSION"] = bootstrap_version
    return environment


@pytest.mark.parametrize("script", ["deploy.sh", "diff.sh"])
def test_not_bootstrapped(script: str, tmp_path: Path) -> None:
    completed = run(script, "testing", environment=fake_aws_environment(tmp_path, None))
    assert completed.returncode == 1
    line = one_line_error(completed, script.removesuffix(".sh"))
    assert "account 123456789012 is not CDK-bootstrapped in eu-west-1" in line
    assert "run `npx cdk bootstrap aws://123456789012/eu-west-1` once" in line


def test_an_old_bootstrap_is_refused(tmp_path: Path) -> None:
    completed = run("deploy.sh", "testing", environment=fake_aws_environment(tmp_path, "5"))
    assert completed.returncode == 1
    assert "has CDK bootstrap version 5, older than the 6 the stacks need" in one_line_error(completed, "deploy: ")


def test_check_passes_on_a_bootstrapped_account(tmp_path: Path) -> None:
    completed = run("deploy.sh", "testing", "--check", environment=fake_aws_environment(tmp_path, "30"))
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == (
        "deploy: PgSchemaDeploy-testing in account 123456789012, region eu-west-1, as "
        "arn:aws:sts::123456789012:user/moto; CDK bootstrap version 30 (qualifier hnb659fds)"
    )


def test_production_destroy_without_force_is_refused_before_aws(tmp_path: Path) -> None:
    completed = run("destroy.sh", "production", environment=no_aws_environment(tmp_path))
    assert completed.returncode == 2
    line = one_line_error(completed, "destroy: refusing to destroy production without --force")
    for kept in ("final snapshot", "secret", "log groups"):
        assert kept in line


def test_production_destroy_with_force_goes_on_to_the_aws_checks(tmp_path: Path) -> None:
    environment = {**no_aws_environment(tmp_path), "AWS_REGION": "eu-west-1"}
    completed = run("destroy.sh", "production", "--force", environment=environment)
    assert completed.returncode == 1
    assert "no AWS credentials found" in one_line_error(completed, "destroy: ")


def test_testing_destroy_says_nothing_stays() -> None:
    assert what_stays(ENVIRONMENTS["testing"]).startswith("nothing stays")


def test_bad_arguments_are_one_line(tmp_path: Path) -> None:
    completed = run("deploy.sh", "testing", "--bogus", environment=no_aws_environment(tmp_path))
    assert completed.returncode == 2
    assert "unrecognized arguments: --bogus (usage: scripts/deploy.sh" in one_line_error(completed, "deploy: ")


# What the CLI prints when the deploy-time migration resource fails (the runner's message, relayed).
FAILED_DEPLOY = (
    "PgSchemaDeploy-testing | 3:04:05 PM | UPDATE_FAILED | AWS::CloudFormation::CustomResource | "
    "SchemaMigration/Resource/Default (SchemaMigration1A2B3C) Received response status [FAILED] from custom "
    "resource. Message returned: database/migrations/004_add_phone.sql:3: 004_add_phone failed: SQLSTATE 42601: "
    'syntax error at or near "TABL"; 003_x applied earlier in this deploy (RequestId: 0f0e-11)\n'
)


def test_a_failed_migration_is_found_with_file_line_and_sqlstate() -> None:
    failure = cdk_report.migration_failure("\x1b[31m" + FAILED_DEPLOY + "\x1b[0m")
    assert failure == cdk_report.MigrationFailure(
        file="database/migrations/004_add_phone.sql",
        line=3,
        version="004_add_phone",
        sqlstate="42601",
        message='syntax error at or near "TABL"; 003_x applied earlier in this deploy',
    )
    markdown = cdk_report.deploy_markdown("testing", "PgSchemaDeploy-testing", {}, failure, succeeded=False)
    assert "| `database/migrations/004_add_phone.sql` | 3 | 42601 |" in markdown
    assert cdk_report.migration_failure("PgSchemaDeploy-testing | CREATE_FAILED | AWS::RDS::DBCluster") is None


def test_a_deploy_summary_lists_migrations_schema_version_and_outputs() -> None:
    outputs = {"SchemaVersion": "004_add_phone", "MigrationsApplied": "003_x,004_add_phone", "DatabasePort": "5432"}
    markdown = cdk_report.deploy_markdown("testing", "PgSchemaDeploy-testing", outputs, None, succeeded=True)
    assert "| 003_x,004_add_phone | 004_add_phone |" in markdown
    assert "| DatabasePort | 5432 |" in markdown
    assert cdk_report.deploy_text(outputs).splitlines()[:2] == [
        "migrations applied by this deploy: 003_x,004_add_phone",
        "schema version: 004_add_phone",
    ]


# The shape `cdk diff` prints for the migration resource's map property and resource changes.
DIFF = """Stack PgSchemaDeploy-testing
Resources
[~] Custom::SchemaMigrations SchemaMigration/Resource/Default SchemaMigration1A2B3C
 ├─ [~] LatestMigration
 │   ├─ [-] 003_add_savings_groups
 │   └─ [+] 005_add_email_index
 └─ [~] Migrations
     ├─ [~] .003_add_savings_groups:
     │   ├─ [-] aaaaaaaaaaaa
     │   └─ [+] bbbbbbbbbbbb
     ├─ [+] Added: .004_add_phone_index
     └─ [+] Added: .005_add_email_index
[~] AWS::RDS::DBCluster Database/Cluster DatabaseClusterABC replace
 └─ [~] EngineVersion (requires replacement)
[+] AWS::Lambda::Function Migration/Runner MigrationRunner123
"""


def test_a_diff_names_the_migrations_a_deploy_runs_and_the_resource_changes() -> None:
    report = cdk_report.parse_diff(DIFF)
    assert report.migrations_added == ["004_add_phone_index", "005_add_email_index"]
    assert report.migrations_edited == ["003_add_savings_groups"]
    assert [(c.operation, c.resource_type, c.impact) for c in report.resources] == [
        ("modify", "Custom::SchemaMigrations", ""),
        ("modify", "AWS::RDS::DBCluster", "replace"),
        ("add", "AWS::Lambda::Function", ""),
    ]
    markdown = cdk_report.diff_markdown("testing", "PgSchemaDeploy-testing", report, [])
    assert "- `004_add_phone_index`" in markdown
    assert "`003_add_savings_groups`: file EDITED" in markdown
    assert "| modify | AWS::RDS::DBCluster | Database/Cluster DatabaseClusterABC | replace |" in markdown


def test_a_first_deploy_runs_every_migration() -> None:
    report = cdk_report.parse_diff("[+] Custom::SchemaMigrations SchemaMigration/Resource/Default SchemaMigrationX\n")
    assert cdk_report.diff_migration_lines(report, ["001_a", "002_b"]) == [
        "`001_a` (first deploy: every migration runs)",
        "`002_b` (first deploy: every migration runs)",
    ]


def fake_cdk(directory: Path, script: str) -> Path:
    """A stand-in for node_modules/.bin/cdk (which would need AWS): a shell script run the same way."""
    directory.mkdir()
    cdk = directory / "cdk"
    cdk.write_text("#!/usr/bin/env bash\n" + script)
    cdk.chmod(0o755)
    (directory / "node").symlink_to(ROOT / "node_modules" / ".bin" / "node")
    return directory


def test_a_failed_deploy_reports_the_migration_in_the_job_summary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bin_dir = fake_cdk(tmp_path / "bin", f"cat <<'OUT'\n{FAILED_DEPLOY}OUT\nexit 1\n")
    monkeypatch.setattr(cdk_commands, "NODE_BIN", bin_dir)
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    with pytest.raises(cdk_commands.CommandError) as raised:
        cdk_commands.deploy(ENVIRONMENTS["testing"], [])
    assert raised.value.status == 1
    assert str(raised.value).startswith(
        "migration failed: database/migrations/004_add_phone.sql:3: 004_add_phone failed: SQLSTATE 42601: "
    )
    assert "UPDATE_FAILED" in capsys.readouterr().out  # the CLI's own output is passed through
    text = summary.read_text()
    assert "## Deploy of testing (PgSchemaDeploy-testing): FAILED" in text
    assert "| `database/migrations/004_add_phone.sql` | 3 | 42601 |" in text


def test_a_deploy_prints_outputs_and_migrations_from_the_outputs_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Writes the --outputs-file the real CLI writes, after checking the arguments it was given.
    script = """
[ "$1 $2" = "deploy PgSchemaDeploy-testing" ] || { echo "unexpected: $*"; exit 9; }
while [ $# -gt 0 ]; do
  case "$1" in --outputs-file) out=$2; shift ;; --require-approval) [ "$2" = never ] || exit 8; shift ;; esac
  shift
done
echo '{"PgSchemaDeploy-testing": {"SchemaVersion": "003_add_savings_groups",
  "MigrationsApplied": "002_add_user_profile,003_add_savings_groups", "DatabasePort": "5432"}}' > "$out"
"""
    monkeypatch.setattr(cdk_commands, "NODE_BIN", fake_cdk(tmp_path / "bin", script))
    monkeypatch.delenv("GITHUB_STEP_SUMMARY", raising=False)
    with open(os.devnull) as not_a_terminal:  # as in CI
        monkeypatch.setattr("sys.stdin", not_a_terminal)
        assert cdk_commands.deploy(ENVIRONMENTS["testing"], []) == 0
    out = capsys.readouterr().out
    assert "migrations applied by this deploy: 002_add_user_profile,003_add_savings_groups" in out
    assert "schema version: 003_add_savings_groups" in out
    assert "  DatabasePort = 5432" in out
