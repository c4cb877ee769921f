"""The deploy-time migration resource (stacks/migration/schema_migration.py), from synthesized templates.

Placement, egress, IAM, timeouts, the dependency on the database, outputs and secrets, on both
flavours and with the Secrets Manager endpoint setting; the custom resource's properties changing
when a migration file changes and only then; and the real `cdk diff` naming a new migration.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template
from cfnlint.api import lint

from database.migrator.manifest import RECENT_WINDOW, build_manifest
from stacks.database_stack import DatabaseStack, project_migration_asset
from stacks.migration.schema_migration import migration_properties
from stacks.settings import (
    ENVIRONMENTS,
    MIGRATION_MAX_TIMEOUT_SECONDS,
    MIGRATION_MAX_TOTAL_SECONDS,
    ContextError,
    DatabaseAccess,
    MigrationSettings,
    SchemaDriftPolicy,
    SettingsError,
    apply_context,
)

from .conftest import ENVIRONMENTS as ENV_NAMES
from .conftest import ROOT, Synth, cdk_json_context, synthesize
from .helpers import only, resources, walk

DB_PORT = 5432
MIGRATION_OUTPUTS = {"SchemaVersion", "MigrationsApplied", "MigrationFunctionName"}
ENI_ACTIONS = [
    "ec2:AssignPrivateIpAddresses",
    "ec2:CreateNetworkInterface",
    "ec2:DeleteNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:UnassignPrivateIpAddresses",
]
LOG_ACTIONS = ["logs:CreateLogStream", "logs:PutLogEvents"]


@pytest.fixture(params=ENV_NAMES)
def env(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="session")
def endpoint_synth() -> Synth:
    """secrets_manager_endpoint on in both environments, testing on Aurora and production on RDS."""
    return synthesize({"secrets_manager_endpoint": "true", "database.production": "rds-free"})


# --------------------------------------------------------------------------------------------
# Readers


@dataclass
class Migration:
    """The migration's resources in one template, by logical id."""

    template: dict[str, Any]
    resource_id: str
    runner_id: str
    deploy_id: str
    framework_id: str
    waiter_id: str  # the framework's is-complete function
    timeout_id: str  # the framework's on-timeout function
    runner_group_id: str

    @property
    def function_ids(self) -> tuple[str, ...]:
        return (self.runner_id, self.deploy_id, self.framework_id, self.waiter_id, self.timeout_id)

    def resource(self, logical_id: str) -> dict[str, Any]:
        resource: dict[str, Any] = self.template["Resources"][logical_id]
        return resource

    @property
    def properties(self) -> dict[str, Any]:
        properties: dict[str, Any] = self.resource(self.resource_id)["Properties"]
        return properties

    def function(self, logical_id: str) -> dict[str, Any]:
        properties: dict[str, Any] = self.resource(logical_id)["Properties"]
        return properties

    def log_group_id(self, function_id: str) -> str:
        """The function's log group: Lambda's default /aws/lambda/<function name>, created by the stack."""
        name = f"/aws/lambda/{self.function(function_id)['FunctionName']}"
        groups = resources(self.template, "AWS::Logs::LogGroup")
        (found,) = [lid for lid, group in groups.items() if group["Properties"].get("LogGroupName") == name]
        return found

    def role_id(self, function_id: str) -> str:
        role_id: str = self.function(function_id)["Role"]["Fn::GetAtt"][0]
        return role_id

    def statements(self, function_id: str) -> list[dict[str, Any]]:
        """Every IAM statement the function's role carries: inline in the role and in attached policies."""
        role_id = self.role_id(function_id)
        role = self.function(role_id)
        assert "ManagedPolicyArns" not in role, f"{role_id} has managed policies: {role['ManagedPolicyArns']}"
        found = [s for policy in role.get("Policies", []) for s in policy["PolicyDocument"]["Statement"]]
        for policy in resources(self.template, "AWS::IAM::Policy").values():
            if {"Ref": role_id} in policy["Properties"]["Roles"]:
                found += policy["Properties"]["PolicyDocument"]["Statement"]
        return found


def migration_of(template: dict[str, Any]) -> Migration:
    resource_id, _ = only(template, "Custom::SchemaMigrations")
    functions = resources(template, "AWS::Lambda::Function")
    by_handler = {props["Properties"]["Handler"]: lid for lid, props in functions.items()}
    assert set(by_handler) == {
        "schema_migrations.runner.handler",
        "schema_migrations.deploy.handler",
        "framework.onEvent",
        "framework.isComplete",
        "framework.onTimeout",
    }, "the migration adds exactly five functions"
    groups = resources(template, "AWS::EC2::SecurityGroup")
    (runner_group_id,) = [lid for lid in groups if lid.startswith("SchemaMigrationRunnerSecurityGroup")]
    return Migration(
        template=template,
        resource_id=resource_id,
        runner_id=by_handler["schema_migrations.runner.handler"],
        deploy_id=by_handler["schema_migrations.deploy.handler"],
        framework_id=by_handler["framework.onEvent"],
        waiter_id=by_handler["framework.isComplete"],
        timeout_id=by_handler["framework.onTimeout"],
        runner_group_id=runner_group_id,
    )


def group_id(template: dict[str, Any], prefix: str) -> str:
    (found,) = [lid for lid in resources(template, "AWS::EC2::SecurityGroup") if lid.startswith(prefix)]
    return found


def get_att(logical_id: str, attribute: str) -> dict[str, list[str]]:
    return {"Fn::GetAtt": [logical_id, attribute]}


def secret_ref(template: dict[str, Any]) -> dict[str, list[str]]:
    """The master secret's ARN as the template spells it (RDS makes the secret: an attribute)."""
    return get_att(database_id(template), "MasterUserSecret.SecretArn")


def location(template: dict[str, Any]) -> dict[str, object]:
    """DATABASE_HOST, _PORT, _NAME: RDS's own secret holds only the username and password."""
    return {
        "DATABASE_HOST": get_att(database_id(template), "Endpoint.Address"),
        "DATABASE_PORT": str(DB_PORT),
        "DATABASE_NAME": only(template, "AWS::RDS::DBCluster" if is_aurora(template) else "AWS::RDS::DBInstance")[1][
            "Properties"
        ]["DatabaseName" if is_aurora(template) else "DBName"],
    }


def database_id(template: dict[str, Any]) -> str:
    clusters = resources(template, "AWS::RDS::DBCluster")
    if clusters:
        return next(iter(clusters))
    return only(template, "AWS::RDS::DBInstance")[0]


def waiter_machine_id(template: dict[str, Any]) -> str:
    return only(template, "AWS::StepFunctions::StateMachine")[0]


def is_aurora(template: dict[str, Any]) -> bool:
    return bool(resources(template, "AWS::RDS::DBCluster"))


# --------------------------------------------------------------------------------------------
# Placement, network, IAM, timeouts (both flavours, both environments)


def test_functions_runtime_handlers_and_placement(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    settings = ENVIRONMENTS[env].migration
    runner, deploy = migration.function(migration.runner_id), migration.function(migration.deploy_id)
    for function in (runner, deploy):
        assert function["Runtime"] == "python3.13"
        assert function["Architectures"] == ["x86_64"]
    assert runner["Code"] == deploy["Code"], "one asset serves both functions"
    # only the runner is in the VPC: the database's isolated subnets, its own group and nothing else
    _, subnet_group = only(template, "AWS::RDS::DBSubnetGroup")
    assert runner["VpcConfig"] == {
        "SubnetIds": subnet_group["Properties"]["SubnetIds"],
        "SecurityGroupIds": [get_att(migration.runner_group_id, "GroupId")],
    }
    assert "VpcConfig" not in deploy
    for framework_id in (migration.framework_id, migration.waiter_id, migration.timeout_id):
        assert "VpcConfig" not in migration.function(framework_id), "the Provider framework stays outside"
    assert (runner["Timeout"], runner["MemorySize"]) == (settings.timeout_seconds, settings.memory_mb) == (600, 512)
    assert deploy["Timeout"] == 660


def test_environment_variables_carry_no_credentials(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    assert migration.function(migration.runner_id)["Environment"] == {
        "Variables": {"ENVIRONMENT_NAME": env, "SCHEMA_DRIFT": "report", "LINT_ERROR_ROWS": "100000"}
    }
    assert migration.function(migration.deploy_id)["Environment"] == {
        "Variables": {
            "RUNNER_FUNCTION_NAME": {"Ref": migration.runner_id},
            "DATABASE_SECRET_ARN": secret_ref(template),
            "ENVIRONMENT_NAME": env,
            "SECRETS_IN_VPC": "0",
            **location(template),
            "RUNNER_TIMEOUT_SECONDS": "600",
            "DEPLOY_BUDGET_SECONDS": str(ENVIRONMENTS[env].migration.total_timeout_seconds),
        }
    }


def test_runner_egress_is_the_database_port_only(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    database_group = group_id(template, "SecurityDatabase")
    runner_group = migration.resource(migration.runner_group_id)["Properties"]
    # inline, so that EC2's default allow-all egress is never there
    assert runner_group["SecurityGroupEgress"] == [
        {
            "IpProtocol": "tcp",
            "FromPort": DB_PORT,
            "ToPort": DB_PORT,
            "DestinationSecurityGroupId": get_att(database_group, "GroupId"),
            "Description": "Migration runner to PostgreSQL",
        }
    ]
    assert "SecurityGroupIngress" not in runner_group
    assert not resources(template, "AWS::EC2::SecurityGroupEgress")
    # the database accepts it: one ingress rule from the runner's group, on the port
    from_runner = [
        rule["Properties"]
        for rule in resources(template, "AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["SourceSecurityGroupId"] == get_att(migration.runner_group_id, "GroupId")
    ]
    assert from_runner == [
        {
            "Description": "PostgreSQL from the migration runner",
            "FromPort": DB_PORT,
            "ToPort": DB_PORT,
            "IpProtocol": "tcp",
            "GroupId": get_att(database_group, "GroupId"),
            "SourceSecurityGroupId": get_att(migration.runner_group_id, "GroupId"),
        }
    ]
    assert "0.0.0.0/0" not in json.dumps(runner_group)


def test_deploy_role_reads_only_this_secret_and_invokes_only_the_runner(synth: Synth, env: str) -> None:
    """Plus the status of its own stack, and in production the database's deletion protection
    (the create-rollback guard)."""
    template = synth.json[env]
    migration = migration_of(template)
    log_group = migration.log_group_id(migration.deploy_id)
    expected = [
        {"Action": LOG_ACTIONS, "Effect": "Allow", "Resource": get_att(log_group, "Arn")},
        {"Action": ["lambda:GetFunction", "lambda:InvokeFunction"], "Effect": "Allow",
         "Resource": get_att(migration.runner_id, "Arn")},
        {"Action": "secretsmanager:GetSecretValue", "Effect": "Allow", "Resource": secret_ref(template)},
        {"Action": "cloudformation:DescribeStacks", "Effect": "Allow", "Resource": {"Ref": "AWS::StackId"}},
    ]  # fmt: skip
    if env == "production":
        kind = "cluster" if is_aurora(template) else "db"
        arn = {"Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":rds:", {"Ref": "AWS::Region"}, ":",
                                 {"Ref": "AWS::AccountId"}, f":{kind}:", {"Ref": database_id(template)}]]}  # fmt: skip
        action = "rds:ModifyDBCluster" if is_aurora(template) else "rds:ModifyDBInstance"
        expected.append({"Action": action, "Effect": "Allow", "Resource": arn})
    assert sorted(migration.statements(migration.deploy_id), key=json.dumps) == sorted(expected, key=json.dumps)


def test_runner_role_manages_its_network_interfaces_and_writes_its_log(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    log_group = migration.log_group_id(migration.runner_id)
    assert sorted(migration.statements(migration.runner_id), key=json.dumps) == sorted(
        [
            {"Action": ENI_ACTIONS, "Effect": "Allow", "Resource": "*"},
            {"Action": LOG_ACTIONS, "Effect": "Allow", "Resource": get_att(log_group, "Arn")},
        ],
        key=json.dumps,
    )


def test_provider_framework_role_invokes_only_the_deploy_function(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    log_group = migration.log_group_id(migration.framework_id)
    deploy_arn = get_att(migration.deploy_id, "Arn")
    assert sorted(migration.statements(migration.framework_id), key=json.dumps) == sorted(
        [
            {"Action": LOG_ACTIONS, "Effect": "Allow", "Resource": get_att(log_group, "Arn")},
            {
                "Action": "lambda:InvokeFunction",
                "Effect": "Allow",
                "Resource": [deploy_arn, {"Fn::Join": ["", [deploy_arn, ":*"]]}],
            },
            {"Action": "lambda:GetFunction", "Effect": "Allow", "Resource": deploy_arn},
            {"Action": "states:StartExecution", "Effect": "Allow", "Resource": {"Ref": waiter_machine_id(template)}},
        ],
        key=json.dumps,
    )


def test_the_waiter_calls_the_deploy_function_again_until_the_deploy_is_done(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    settings = ENVIRONMENTS[env].migration
    definition = json.dumps(migration.resource(waiter_machine_id(template))["Properties"]["DefinitionString"])
    attempts = (settings.total_timeout_seconds + 60) // 10
    assert f'\\"IntervalSeconds\\":10,\\"MaxAttempts\\":{attempts},\\"BackoffRate\\":1' in definition
    deploy_arn = get_att(migration.deploy_id, "Arn")
    waiter_log = get_att(migration.log_group_id(migration.waiter_id), "Arn")
    timeout_log = get_att(migration.log_group_id(migration.timeout_id), "Arn")
    assert migration.role_id(migration.waiter_id) == migration.role_id(migration.timeout_id)
    assert sorted(migration.statements(migration.waiter_id), key=json.dumps) == sorted(
        [
            {"Action": LOG_ACTIONS, "Effect": "Allow", "Resource": [waiter_log, timeout_log]},
            {"Action": "lambda:InvokeFunction", "Effect": "Allow",
             "Resource": [deploy_arn, {"Fn::Join": ["", [deploy_arn, ":*"]]}]},
            {"Action": "lambda:GetFunction", "Effect": "Allow", "Resource": deploy_arn},
        ],
        key=json.dumps,
    )  # fmt: skip


def test_the_secret_is_readable_by_the_deploy_function_alone(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    readers = {
        role["Ref"]
        for policy in resources(template, "AWS::IAM::Policy").values()
        if "secretsmanager" in json.dumps(policy["Properties"]["PolicyDocument"])
        for role in policy["Properties"]["Roles"]
    }
    readers |= {
        lid for lid, role in resources(template, "AWS::IAM::Role").items() if "secretsmanager" in json.dumps(role)
    }
    assert readers == {migration.role_id(migration.deploy_id)}


def test_timeouts_agree_so_the_deploy_function_has_the_last_word(synth: Synth, env: str) -> None:
    """One run inside one deploy-function call; the deploy's time for migrations inside the
    framework's total timeout, inside CloudFormation's wait (at most an hour)."""
    migration = migration_of(synth.json[env])
    settings = ENVIRONMENTS[env].migration
    runner = migration.function(migration.runner_id)["Timeout"]
    deploy = migration.function(migration.deploy_id)["Timeout"]
    budget = int(migration.function(migration.deploy_id)["Environment"]["Variables"]["DEPLOY_BUDGET_SECONDS"])
    service = int(migration.properties["ServiceTimeout"])
    assert runner + 60 == deploy <= 900  # Lambda's ceiling
    assert budget + 60 == settings.provider_timeout_seconds and budget + 150 == service <= 3600
    assert (budget, service) == ((1800, 1950) if env == "testing" else (3000, 3150))


def test_properties_describe_the_project_migrations(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    manifest = build_manifest(ROOT / "database" / "migrations")
    resource_id = "DBClusterResourceId" if is_aurora(template) else "DbiResourceId"
    assert migration.properties == {
        "ServiceToken": get_att(migration.framework_id, "Arn"),
        "ServiceTimeout": str(ENVIRONMENTS[env].migration.service_timeout_seconds),
        "Environment": env,
        "DatabaseRoles": {"Application": "webapp_app", "ReadOnly": "webapp_readonly"},
        "Database": get_att(database_id(template), resource_id),
        "MigrationsDigest": manifest.digest,
        "MigrationCount": str(manifest.count),
        "LatestMigration": manifest.latest,
        "Migrations": manifest.recent,
    }
    assert manifest.count >= 3 and set(manifest.recent) >= {"001_initial_schema", "002_add_user_profile"}


def test_runs_after_the_writer_and_the_network_path(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    depends_on = set(migration.resource(migration.resource_id)["DependsOn"])
    instances = resources(template, "AWS::RDS::DBInstance")
    if is_aurora(template):
        # the cluster through the Database property's GetAtt, its writer instance explicitly
        (writer_id,) = instances
        assert writer_id in depends_on
        assert instances[writer_id]["Properties"]["DBClusterIdentifier"] == {"Ref": database_id(template)}
    else:
        assert migration.properties["Database"]["Fn::GetAtt"][0] == database_id(template)
    from_runner = [
        lid
        for lid, rule in resources(template, "AWS::EC2::SecurityGroupIngress").items()
        if rule["Properties"]["SourceSecurityGroupId"] == get_att(migration.runner_group_id, "GroupId")
    ]
    assert from_runner and set(from_runner) <= depends_on


def test_fixed_function_names_and_their_log_groups(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    settings = ENVIRONMENTS[env]
    names = {migration.function(function_id)["FunctionName"] for function_id in migration.function_ids}
    assert names == {
        f"pg-schema-deploy-{env}-migrate",
        f"pg-schema-deploy-{env}-migration-runner",
        f"pg-schema-deploy-{env}-migration-provider",
        f"pg-schema-deploy-{env}-migration-waiter",
        f"pg-schema-deploy-{env}-migration-timeout",
    }
    for function_id in migration.function_ids:
        assert "LogGroup" not in migration.function(function_id).get("LoggingConfig", {})  # Lambda's default
        group = migration.resource(migration.log_group_id(function_id))
        assert group["Properties"]["RetentionInDays"] == settings.log_retention_days
        # kept after a delete, but a failed first create's rollback deletes it: the retry can create it again
        assert group["DeletionPolicy"] == ("Delete" if env == "testing" else "RetainExceptOnCreate")
        # the stack creates it before the function: the role's policy names it, the function needs the policy
        writable = [
            statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for statement in migration.statements(function_id)
            if statement["Action"] == LOG_ACTIONS and statement["Effect"] == "Allow"
        ]  # the framework's waiter and timeout functions share a role, so one statement names both groups
        assert any(get_att(migration.log_group_id(function_id), "Arn") in groups for groups in writable)
        (policy_id,) = [
            lid
            for lid, policy in resources(template, "AWS::IAM::Policy").items()
            if policy["Properties"]["Roles"] == [{"Ref": migration.role_id(function_id)}]
        ]
        assert policy_id in migration.resource(function_id)["DependsOn"]


def test_the_create_rollback_guard_names_the_protected_database(synth: Synth, env: str) -> None:
    """Production only (deletion protection): deleted before the database, since it names it."""
    template = synth.json[env]
    migration = migration_of(template)
    guards = resources(template, "Custom::CreateRollbackGuard")
    if env == "testing":
        assert not guards
        return
    ((_, guard),) = guards.items()
    assert guard["Properties"] == {
        "ServiceToken": get_att(migration.framework_id, "Arn"),
        "ServiceTimeout": "300",
        "DatabaseIdentifier": {"Ref": database_id(template)},
        "DatabaseKind": "cluster" if is_aurora(template) else "instance",
    }
    assert migration.resource(database_id(template))["Properties"]["DeletionProtection"] is True


def test_the_deploy_function_reads_the_schema_version_output_it_answers(synth: Synth, env: str) -> None:
    """After a rollback the deploy function answers SchemaVersion from the stack's output of that name."""
    if str(ROOT / "lambda") not in sys.path:
        sys.path.insert(0, str(ROOT / "lambda"))
    from schema_migrations.deploy import SCHEMA_VERSION_OUTPUT

    migration = migration_of(synth.json[env])
    output = synth.json[env]["Outputs"][SCHEMA_VERSION_OUTPUT]
    assert output["Value"] == get_att(migration.resource_id, "SchemaVersion")


def test_migration_outputs_are_not_exported(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    outputs = template["Outputs"]
    assert outputs["SchemaVersion"]["Value"] == get_att(migration.resource_id, "SchemaVersion")
    assert outputs["MigrationsApplied"]["Value"] == get_att(migration.resource_id, "AppliedThisDeploy")
    assert outputs["MigrationFunctionName"]["Value"] == {"Ref": migration.deploy_id}
    for name in MIGRATION_OUTPUTS:
        assert "Export" not in outputs[name], f"{name}: an imported export could never change"


def test_no_secret_value_in_functions_properties_or_outputs(synth: Synth, env: str) -> None:
    template = synth.json[env]
    migration = migration_of(template)
    checked = [
        migration.function(migration.runner_id),
        migration.function(migration.deploy_id),
        migration.function(migration.framework_id),
        migration.function(migration.waiter_id),
        migration.properties,
        template["Outputs"],
    ]
    for document in checked:
        rendered = json.dumps(document)
        assert "resolve:secretsmanager" not in rendered and "SecretString" not in rendered
        for path, value in walk(document):
            assert not (isinstance(value, dict) and any("password" in key.lower() for key in value)), path


# --------------------------------------------------------------------------------------------
# The Secrets Manager endpoint setting


def test_endpoint_lets_the_runner_read_the_secret_itself(endpoint_synth: Synth, env: str) -> None:
    template = endpoint_synth.json[env]
    migration = migration_of(template)
    (endpoint_id, endpoint) = only(template, "AWS::EC2::VPCEndpoint")
    endpoint_group = group_id(template, "SchemaMigrationSecretsEndpointSecurityGroup")
    _, subnet_group = only(template, "AWS::RDS::DBSubnetGroup")
    assert {key: value for key, value in endpoint["Properties"].items() if key != "Tags"} == {
        "PrivateDnsEnabled": True,
        "SecurityGroupIds": [get_att(endpoint_group, "GroupId")],
        "ServiceName": {"Fn::Join": ["", ["com.amazonaws.", {"Ref": "AWS::Region"}, ".secretsmanager"]]},
        "SubnetIds": subnet_group["Properties"]["SubnetIds"],
        "VpcEndpointType": "Interface",
        "VpcId": endpoint["Properties"]["VpcId"],
    }
    # the endpoint accepts HTTPS from the runner only, and sends nothing
    ingress = [
        rule["Properties"]
        for rule in resources(template, "AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == get_att(endpoint_group, "GroupId")
    ]
    assert [(r["FromPort"], r["ToPort"], r["SourceSecurityGroupId"]) for r in ingress] == [
        (443, 443, get_att(migration.runner_group_id, "GroupId"))
    ]
    assert migration.resource(endpoint_group)["Properties"]["SecurityGroupEgress"][0]["Description"] == (
        "Disallow all traffic"
    )
    # the runner: the database port and HTTPS to the endpoint, nothing else
    egress = migration.resource(migration.runner_group_id)["Properties"]["SecurityGroupEgress"]
    assert [(rule["FromPort"], rule["DestinationSecurityGroupId"]) for rule in egress] == [
        (DB_PORT, get_att(group_id(template, "SecurityDatabase"), "GroupId")),
        (443, get_att(endpoint_group, "GroupId")),
    ]
    # the secret moves from the deploy function's role to the runner's
    secret = {"Action": "secretsmanager:GetSecretValue", "Effect": "Allow", "Resource": secret_ref(template)}
    assert secret in migration.statements(migration.runner_id)
    assert "secretsmanager" not in json.dumps(migration.statements(migration.deploy_id))
    assert migration.function(migration.runner_id)["Environment"]["Variables"] == {
        "ENVIRONMENT_NAME": env,
        "SCHEMA_DRIFT": "report",
        "LINT_ERROR_ROWS": "100000",
        "DATABASE_SECRET_ARN": secret_ref(template),
        **location(template),
    }
    assert migration.function(migration.deploy_id)["Environment"]["Variables"]["SECRETS_IN_VPC"] == "1"
    assert {endpoint_id, endpoint_group} <= set(migration.resource(migration.resource_id)["DependsOn"])


def test_endpoint_setting_is_nag_and_lint_clean(endpoint_synth: Synth) -> None:
    assert endpoint_synth.nag_report.success, [v.rule_name for v in endpoint_synth.nag_report.violations]
    for name, template in endpoint_synth.json.items():
        matches = lint(json.dumps(template), regions=["us-east-1", "eu-west-1"])
        assert not matches, f"{name}: " + "\n".join(str(match) for match in matches)


# --------------------------------------------------------------------------------------------
# Settings


def test_migration_settings_defaults_and_limits() -> None:
    defaults = MigrationSettings()
    assert (defaults.timeout_seconds, defaults.memory_mb, defaults.secrets_manager_endpoint) == (600, 512, False)
    assert (defaults.deploy_timeout_seconds, defaults.total_timeout_seconds) == (660, 1800)
    assert (defaults.provider_timeout_seconds, defaults.service_timeout_seconds) == (1860, 1950)
    longest = MigrationSettings(timeout_seconds=MIGRATION_MAX_TIMEOUT_SECONDS)
    assert longest.deploy_timeout_seconds == 900  # Lambda's ceiling, reached and not passed
    most = MigrationSettings(total_timeout_seconds=MIGRATION_MAX_TOTAL_SECONDS)
    assert most.service_timeout_seconds == 3600  # CloudFormation's ceiling, reached and not passed
    for total in (MIGRATION_MAX_TOTAL_SECONDS + 10, 655, 1805):
        with pytest.raises(SettingsError, match=rf"total_timeout_seconds={total}: must be a multiple of 10 from "
                                                r"timeout_seconds \+ 60 \(660\) to 3450"):  # fmt: skip
            MigrationSettings(total_timeout_seconds=total)
    with pytest.raises(SettingsError, match=r"timeout_seconds=841: must be 60 to 840"):
        MigrationSettings(timeout_seconds=841)
    with pytest.raises(SettingsError, match=r"timeout_seconds=30"):
        MigrationSettings(timeout_seconds=30)
    with pytest.raises(SettingsError, match=r"memory_mb=64: must be 128 to 10240"):
        MigrationSettings(memory_mb=64)
    assert ENVIRONMENTS["testing"].migration == defaults
    assert ENVIRONMENTS["production"].migration == MigrationSettings(total_timeout_seconds=3000)


def test_endpoint_context_key() -> None:
    testing, production = apply_context({"secrets_manager_endpoint.production": "true"})
    assert not testing.migration.secrets_manager_endpoint and production.migration.secrets_manager_endpoint
    testing, production = apply_context(
        {"secrets_manager_endpoint": "true", "secrets_manager_endpoint.testing": "false"}
    )
    assert not testing.migration.secrets_manager_endpoint and production.migration.secrets_manager_endpoint
    with pytest.raises(ContextError, match=r"'secrets_manager_endpoint'='yes': allowed values are true, false"):
        apply_context({"secrets_manager_endpoint": "yes"})
    with pytest.raises(ContextError, match=r"'secrets_manager_endpoint.staging' names no environment"):
        apply_context({"secrets_manager_endpoint.staging": "true"})


def test_schema_drift_context_key() -> None:
    testing, production = apply_context({"schema_drift.production": "fail", "secrets_manager_endpoint": "true"})
    assert testing.migration.schema_drift is SchemaDriftPolicy.REPORT
    assert production.migration.schema_drift is SchemaDriftPolicy.FAIL
    assert production.migration.secrets_manager_endpoint  # both keys of the migration settings apply
    with pytest.raises(ContextError, match=r"'schema_drift'='ignore': allowed values are report, fail"):
        apply_context({"schema_drift": "ignore"})


def test_schema_drift_setting_reaches_the_runner(tmp_path: Path) -> None:
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    settings = dataclasses.replace(
        ENVIRONMENTS["production"], migration=MigrationSettings(schema_drift=SchemaDriftPolicy.FAIL)
    )
    migration = migration_of(dict(Template.from_stack(DatabaseStack(app, settings)).to_json()))
    assert migration.function(migration.runner_id)["Environment"]["Variables"]["SCHEMA_DRIFT"] == "fail"


def test_lint_error_rows_per_environment_reaches_the_runner(tmp_path: Path) -> None:
    testing, production = apply_context({"lint_error_rows.production": "20000"})
    assert testing.migration.lint_error_rows == 100_000 and production.migration.lint_error_rows == 20_000
    with pytest.raises(ContextError, match=r"'lint_error_rows'='many': expected a whole number of rows"):
        apply_context({"lint_error_rows": "many"})
    with pytest.raises(SettingsError, match=r"lint_error_rows=-1: must be 0 or more"):
        MigrationSettings(lint_error_rows=-1)
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    migration = migration_of(dict(Template.from_stack(DatabaseStack(app, production)).to_json()))
    assert migration.function(migration.runner_id)["Environment"]["Variables"]["LINT_ERROR_ROWS"] == "20000"


def test_custom_timeout_and_memory_reach_the_template(tmp_path: Path) -> None:
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    settings = dataclasses.replace(
        ENVIRONMENTS["testing"],
        migration=MigrationSettings(timeout_seconds=840, memory_mb=1024, total_timeout_seconds=3450),
    )
    migration = migration_of(dict(Template.from_stack(DatabaseStack(app, settings)).to_json()))
    assert migration.function(migration.runner_id)["Timeout"] == 840
    assert migration.function(migration.runner_id)["MemorySize"] == 1024
    assert migration.function(migration.deploy_id)["Timeout"] == 900
    assert migration.properties["ServiceTimeout"] == "3600"


# --------------------------------------------------------------------------------------------
# Properties change when a migration changes, and only then


ADDED_MIGRATION = "004_add_phone_index.sql"


@dataclass
class Variant:
    properties: dict[str, Any]
    code: dict[str, Any]
    assembly: Path


@pytest.fixture(scope="module")
def asset_variants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Variant]]:
    """The testing stack synthesized from copies of the real asset, each changed in one way."""
    asset = project_migration_asset()
    root = tmp_path_factory.mktemp("asset-variants")

    def copy(name: str) -> Path:
        target = root / name / "asset"
        shutil.copytree(asset, target)
        return target

    folders = {"base": asset, "same": copy("same")}
    handler = copy("handler") / "schema_migrations" / "__init__.py"
    handler.write_text(handler.read_text() + "\n# a handler change that is no migration change\n")
    folders["handler"] = handler.parents[1]
    added = copy("added")
    (added / "database" / "migrations" / ADDED_MIGRATION).write_text(
        "CREATE INDEX IF NOT EXISTS idx_users_phone_2 ON users(phone);\n"
    )
    folders["added"] = added
    edited = copy("edited")
    profile = edited / "database" / "migrations" / "002_add_user_profile.sql"
    profile.write_text(profile.read_text() + "-- edited after it was applied\n")
    folders["edited"] = edited

    variants = {}
    for name, folder in folders.items():
        outdir = root / name / "cdk.out"
        app = App(context=cdk_json_context(), outdir=str(outdir))
        stack = DatabaseStack(app, ENVIRONMENTS["testing"], migration_asset=folder)
        app.synth()
        template = json.loads((outdir / f"{stack.stack_name}.template.json").read_text())
        migration = migration_of(template)
        variants[name] = Variant(migration.properties, migration.function(migration.runner_id)["Code"], outdir)
    yield variants


def test_unchanged_migrations_keep_the_properties(asset_variants: dict[str, Variant]) -> None:
    base = asset_variants["base"]
    assert asset_variants["same"].properties == base.properties
    # new handler code is a new asset, but no reason to run the migrations
    assert asset_variants["handler"].code != base.code
    assert asset_variants["handler"].properties == base.properties


def test_an_added_migration_changes_the_properties_by_name(asset_variants: dict[str, Variant]) -> None:
    base, added = asset_variants["base"].properties, asset_variants["added"].properties
    assert added["Migrations"] == {
        **base["Migrations"],
        "004_add_phone_index": added["Migrations"]["004_add_phone_index"],
    }
    assert added["LatestMigration"] == "004_add_phone_index"
    assert int(added["MigrationCount"]) == int(base["MigrationCount"]) + 1
    assert added["MigrationsDigest"] != base["MigrationsDigest"]
    changed = {key for key in base if base[key] != added[key]}
    assert changed == {"Migrations", "LatestMigration", "MigrationCount", "MigrationsDigest"}


def test_an_edited_migration_changes_its_digest(asset_variants: dict[str, Variant]) -> None:
    base, edited = asset_variants["base"].properties, asset_variants["edited"].properties
    assert edited["Migrations"].keys() == base["Migrations"].keys()
    changed = {
        version for version in base["Migrations"] if base["Migrations"][version] != edited["Migrations"][version]
    }
    assert changed == {"002_add_user_profile"}
    assert {key for key in base if base[key] != edited[key]} == {"Migrations", "MigrationsDigest"}


@pytest.mark.skipif(not (ROOT / "node_modules" / ".bin" / "cdk").exists(), reason="scripts/setup.sh not run")
def test_cdk_diff_names_the_new_migration(asset_variants: dict[str, Variant], tmp_path: Path) -> None:
    """The real CLI, offline: `cdk diff --template <deployed>` against the assembly with 004 added."""
    deployed = asset_variants["base"].assembly / "PgSchemaDeploy-testing.template.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "CDK_"))}
    env.update(HOME=str(tmp_path), CDK_DISABLE_VERSION_CHECK="true", CDK_DISABLE_CLI_TELEMETRY="true")
    env["PATH"] = f"{ROOT / 'node_modules' / '.bin'}{os.pathsep}{env.get('PATH', '')}"
    result = subprocess.run(
        [
            "cdk",
            "diff",
            "PgSchemaDeploy-testing",
            "--no-notices",
            "--app",
            str(asset_variants["added"].assembly),
            "--template",
            str(deployed),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert "[~] Custom::SchemaMigrations SchemaMigration/Resource" in output, output
    assert "[+] Added: .004_add_phone_index" in output, output
    assert "[-] 003_add_savings_groups" in output and "[+] 004_add_phone_index" in output, output  # LatestMigration
    # the files already applied are not listed: the map changed by one key
    for unchanged in ("001_initial_schema", "002_add_user_profile"):
        assert unchanged not in output, output
    assert output.count("003_add_savings_groups") == 1, output


def test_a_long_history_keeps_the_properties_small(tmp_path: Path) -> None:
    """Thousands of files: the names of the newest 100 only, the digest over all of them."""
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    for number in range(1, 3001):
        (migrations / f"{number:04d}_table_{number}.sql").write_text(f"CREATE TABLE t{number} (id int);\n")
    properties = migration_properties(build_manifest(migrations), "testing", "database-token", DatabaseAccess())
    assert len(properties["Migrations"]) == RECENT_WINDOW  # type: ignore[arg-type]
    assert properties["MigrationCount"] == "3000" and properties["LatestMigration"] == "3000_table_3000"
    assert len(json.dumps(properties)) < 6_000  # far below the 1 MB template and 4 KB response limits


def test_a_bad_migration_file_stops_the_synth_naming_it(tmp_path: Path) -> None:
    asset = tmp_path / "asset"
    shutil.copytree(project_migration_asset(), asset)
    (asset / "database" / "migrations" / "add_phone_index.sql").write_text("SELECT 1;\n")
    app = App(context=cdk_json_context(), outdir=str(tmp_path / "out"))
    with pytest.raises(
        SettingsError, match=r"database/migrations/add_phone_index\.sql: malformed migration name"
    ) as error:
        DatabaseStack(app, ENVIRONMENTS["testing"], migration_asset=asset)
    assert str(tmp_path) not in str(error.value)  # the project-relative path, not the asset folder's


def test_the_stack_without_the_migration_is_only_for_the_benchmark(tmp_path: Path) -> None:
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    stack = DatabaseStack(app, ENVIRONMENTS["testing"], schema_migration=False)
    template = Template.from_stack(stack).to_json()
    assert stack.migration is None
    assert not resources(template, "AWS::Lambda::Function") and not resources(template, "Custom::SchemaMigrations")
    assert not MIGRATION_OUTPUTS & set(template["Outputs"])
