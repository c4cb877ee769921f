"""The app as a whole: context overrides, an existing VPC, options off the default path, the API a
later construct (the migration function) builds on, and the real `cdk synth` through scripts/synth.sh."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
from pathlib import Path

import pytest
from aws_cdk import App, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_rds as rds
from aws_cdk.assertions import Template

from stacks.application import create_stacks
from stacks.database import AuroraServerlessDatabase, RdsFreeDatabase
from stacks.database_stack import DatabaseStack
from stacks.settings import ENVIRONMENTS, ContextError, Flavour, RdsInstance

from .conftest import ROOT, Synth, cdk_json_context, synthesize
from .helpers import only, resources


def test_default_flavours_come_from_the_settings_module(default_synth: Synth) -> None:
    for name, stack in default_synth.stacks.items():
        assert stack.settings == ENVIRONMENTS[name]
        assert stack.settings.flavour is Flavour.AURORA_SERVERLESS
        assert resources(default_synth.json[name], "AWS::RDS::DBCluster")


def test_per_environment_database_override() -> None:
    synth = synthesize({"database.testing": "rds-free"})
    assert resources(synth.json["testing"], "AWS::RDS::DBInstance")
    assert not resources(synth.json["testing"], "AWS::RDS::DBCluster")
    assert resources(synth.json["production"], "AWS::RDS::DBCluster")
    assert synth.nag_report.success


def test_t4g_micro_is_selectable() -> None:
    synth = synthesize({"database": "rds-free", "rds_instance_class.production": "db.t4g.micro"})
    assert only(synth.json["production"], "AWS::RDS::DBInstance")[1]["Properties"]["DBInstanceClass"] == "db.t4g.micro"
    assert only(synth.json["testing"], "AWS::RDS::DBInstance")[1]["Properties"]["DBInstanceClass"] == "db.t3.micro"


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"database": "mysql"}, "context key 'database'='mysql': allowed values are aurora-serverless, rds-free"),
        ({"vpc_id": "default"}, "context key 'vpc_id'"),
    ],
)
def test_bad_context_fails_the_app_with_a_clear_error(context: dict[str, str], message: str) -> None:
    app = App(context={**cdk_json_context(), **context})
    with pytest.raises(ContextError) as error:
        create_stacks(app)
    assert message in str(error.value)


def test_existing_vpc_needs_an_account_and_region(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CDK_DEFAULT_ACCOUNT", raising=False)
    monkeypatch.delenv("CDK_DEFAULT_REGION", raising=False)
    app = App(context={**cdk_json_context(), "vpc_id": "vpc-0123456789abcdef0"})
    with pytest.raises(ContextError, match=r"needs a context lookup.*CDK_DEFAULT_ACCOUNT/REGION"):
        create_stacks(app)


def test_existing_vpc_is_looked_up_not_created(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CDK_DEFAULT_ACCOUNT", "123456789012")
    monkeypatch.setenv("CDK_DEFAULT_REGION", "eu-west-1")
    app = App(context={**cdk_json_context(), "vpc_id.production": "vpc-0123456789abcdef0"}, outdir=str(tmp_path))
    stacks = {stack.settings.name: stack for stack in create_stacks(app, nag=False)}
    production, testing = stacks["production"], stacks["testing"]
    assert (production.account, production.region) == ("123456789012", "eu-west-1")
    assert testing.account.startswith("${Token")  # the other environment stays environment-agnostic
    template = Template.from_stack(production).to_json()
    assert not resources(template, "AWS::EC2::VPC")
    assert not resources(template, "AWS::EC2::FlowLog")
    # the one lookup the app asks the CLI for (the CLI performs it with credentials, then re-runs)
    missing = json.loads((tmp_path / "manifest.json").read_text()).get("missing", [])
    assert [(m["provider"], m["props"]["filter"]) for m in missing] == [
        ("vpc-provider", {"vpc-id": "vpc-0123456789abcdef0"})
    ]
    assert resources(Template.from_stack(testing).to_json(), "AWS::EC2::VPC")


def test_multi_az_options(tmp_path: Path) -> None:
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    base = ENVIRONMENTS["production"]
    aurora = DatabaseStack(app, dataclasses.replace(base, name="auroraha", multi_az=True))
    instance = DatabaseStack(
        app,
        dataclasses.replace(
            base, name="rdsha", flavour=Flavour.RDS_FREE, multi_az=True, rds=RdsInstance("db.t4g.micro")
        ),
    )
    aurora_template = Template.from_stack(aurora).to_json()
    instances = resources(aurora_template, "AWS::RDS::DBInstance")
    assert sorted(i["Properties"]["PromotionTier"] for i in instances.values()) == [0, 1]  # writer + reader
    assert {i["Properties"]["DBInstanceClass"] for i in instances.values()} == {"db.serverless"}
    rds_props = only(Template.from_stack(instance).to_json(), "AWS::RDS::DBInstance")[1]["Properties"]
    assert rds_props["MultiAZ"] is True
    assert rds_props["DBInstanceClass"] == "db.t4g.micro"


def test_flavour_constructs_refuse_the_wrong_settings() -> None:
    app = App()
    stack = Stack(app, "S")
    vpc = ec2.Vpc(stack, "Vpc", nat_gateways=0)
    from stacks.database import DatabaseSecurityGroups

    security = DatabaseSecurityGroups(stack, "Sec", vpc=vpc, port=5432, environment="testing")
    subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
    rds_settings = dataclasses.replace(ENVIRONMENTS["testing"], flavour=Flavour.RDS_FREE)
    with pytest.raises(ValueError, match="not aurora-serverless"):
        AuroraServerlessDatabase(stack, "A", settings=rds_settings, vpc=vpc, subnets=subnets, security=security)
    with pytest.raises(ValueError, match="not rds-free"):
        RdsFreeDatabase(stack, "R", settings=ENVIRONMENTS["testing"], vpc=vpc, subnets=subnets, security=security)


def test_api_for_a_later_migration_function(tmp_path: Path) -> None:
    """What the deploy-time migration construct will use: VPC, subnets, clients group, secret, IAM."""
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    stack = DatabaseStack(app, ENVIRONMENTS["testing"])
    database = stack.database
    assert isinstance(database.resource, rds.DatabaseCluster)
    assert database.vpc is stack.network.vpc
    assert database.subnets.subnet_type is ec2.SubnetType.PRIVATE_ISOLATED and stack.network.vpc.isolated_subnets
    assert database.clients_security_group is stack.clients_security_group
    assert (database.database_name, database.username, database.settings.port) == ("users_testing", "webapp", 5432)
    role = iam.Role(stack, "MigrationRole", assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"))
    database.secret.grant_read(role)
    database.grant_connect(role)
    policy = json.dumps(Template.from_stack(stack).to_json()["Resources"])
    assert "rds-db:connect" in policy and "secretsmanager:GetSecretValue" in policy
    assert ":dbuser:" in policy and "/webapp" in policy


@pytest.mark.skipif(not (ROOT / "node_modules" / ".bin" / "cdk").exists(), reason="scripts/setup.sh not run")
def test_synth_script_offline_without_credentials(tmp_path: Path) -> None:
    """The newcomer's path: scripts/synth.sh with no AWS variables at all (real CLI, real cdk-nag)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(HOME=str(tmp_path), CDK_OUTDIR=str(tmp_path / "out"), SYNTH_VERBOSE="1")
    stale = tmp_path / "out" / "asset.0123456789abcdef"  # an earlier synth's Lambda asset
    stale.mkdir(parents=True)
    result = subprocess.run(
        ["scripts/synth.sh", "-c", "database.production=rds-free"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "synth: 2 stack(s)" in result.stdout
    assert "PgSchemaDeploy-testing" in result.stdout and "PgSchemaDeploy-production" in result.stdout
    assert "synth: wall time" in result.stdout
    # cdk.json sets the flags `cdk init` would for the pinned aws-cdk-lib; SYNTH_VERBOSE shows the CLI's output.
    assert "Successfully synthesized" in result.stderr and "feature flags are not configured" not in result.stderr
    assets = {path.name for path in (tmp_path / "out").glob("asset.*")}
    assert assets and stale.name not in assets
    for template in (tmp_path / "out").glob("*.template.json"):
        used = {resource.get("Metadata", {}).get("aws:asset:path") for resource in
                json.loads(template.read_text())["Resources"].values()}
        assert used - {None} <= assets
    production = json.loads((tmp_path / "out" / "PgSchemaDeploy-production.template.json").read_text())
    assert resources(production, "AWS::RDS::DBInstance") and not resources(production, "AWS::RDS::DBCluster")

    bad = subprocess.run(
        ["scripts/synth.sh", "-c", "database=aurora"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert bad.returncode != 0
    assert "error: context key 'database'='aurora': allowed values are aurora-serverless, rds-free" in bad.stderr
