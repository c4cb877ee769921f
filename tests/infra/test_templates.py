"""Template tests: both environments on both flavours (the flavour set with `-c database=...`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Match, Template

from stacks.database_stack import DatabaseStack
from stacks.settings import ENVIRONMENTS, POSTGRES_VERSION, Removal

from .conftest import ENVIRONMENTS as ENV_NAMES
from .conftest import Synth, cdk_json_context
from .helpers import only, resources, walk

DB_PORT = 5432


@pytest.fixture(params=ENV_NAMES)
def env(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def flavour_of(synth: Synth) -> str:
    return next(iter(synth.stacks.values())).settings.flavour.value


def database_resource(template: dict[str, Any], flavour: str) -> tuple[str, dict[str, Any]]:
    return only(template, "AWS::RDS::DBCluster" if flavour == "aurora-serverless" else "AWS::RDS::DBInstance")


def test_stacks_are_named_per_environment(synth: Synth) -> None:
    assert sorted(stack.stack_name for stack in synth.stacks.values()) == [
        "PgSchemaDeploy-production",
        "PgSchemaDeploy-testing",
    ]
    for stack in synth.stacks.values():
        # environment-agnostic: no account lookup, synthesizes without credentials
        assert stack.account == "${Token[AWS.AccountId.0]}" or stack.account.startswith("${Token")


def test_engine_and_version(synth: Synth, env: str) -> None:
    template = synth.json[env]
    flavour = flavour_of(synth)
    _, database = database_resource(template, flavour)
    props = database["Properties"]
    assert props["EngineVersion"] == POSTGRES_VERSION
    if flavour == "aurora-serverless":
        assert props["Engine"] == "aurora-postgresql"
        assert not resources(template, "AWS::RDS::DBInstance").keys() - {
            lid
            for lid, r in resources(template, "AWS::RDS::DBInstance").items()
            if r["Properties"].get("DBInstanceClass") == "db.serverless"
        }
    else:
        assert props["Engine"] == "postgres"
        assert not resources(template, "AWS::RDS::DBCluster")


def test_aurora_capacity_and_instances(aurora_synth: Synth, env: str) -> None:
    template = aurora_synth.json[env]
    _, cluster = only(template, "AWS::RDS::DBCluster")
    scaling = cluster["Properties"]["ServerlessV2ScalingConfiguration"]
    if env == "testing":
        assert scaling == {"MinCapacity": 0, "MaxCapacity": 2, "SecondsUntilAutoPause": 600}
    else:
        assert scaling == {"MinCapacity": 0.5, "MaxCapacity": 8}
    writers = resources(template, "AWS::RDS::DBInstance")
    assert len(writers) == 1  # multi-AZ off by default: one writer, no reader
    (writer,) = writers.values()
    assert writer["Properties"]["DBInstanceClass"] == "db.serverless"
    assert writer["Properties"]["PubliclyAccessible"] is False
    assert writer["Properties"]["DBClusterIdentifier"] == {"Ref": only(template, "AWS::RDS::DBCluster")[0]}


def test_rds_instance_class_and_storage(rds_synth: Synth, env: str) -> None:
    _, instance = only(rds_synth.json[env], "AWS::RDS::DBInstance")
    props = instance["Properties"]
    assert props["DBInstanceClass"] == "db.t3.micro"
    assert props["AllocatedStorage"] == "20"
    assert props["StorageType"] == "gp2"
    assert "MaxAllocatedStorage" not in props  # never grows past the free tier's 20 GB on its own
    assert props["MultiAZ"] is False
    assert props["PubliclyAccessible"] is False
    assert props["EnableCloudwatchLogsExports"] == ["postgresql", "upgrade"]


def test_common_database_properties(synth: Synth, env: str) -> None:
    template = synth.json[env]
    flavour = flavour_of(synth)
    settings = ENVIRONMENTS[env]
    _, database = database_resource(template, flavour)
    props = database["Properties"]
    assert props["StorageEncrypted"] is True
    assert props["EnableIAMDatabaseAuthentication"] is True
    assert "postgresql" in props["EnableCloudwatchLogsExports"]
    assert props["BackupRetentionPeriod"] == settings.backup_retention_days
    assert props["MasterUsername"] == "webapp"
    assert props["DatabaseName" if flavour == "aurora-serverless" else "DBName"] == f"users_{env}"
    assert props["Port"] in (DB_PORT, str(DB_PORT))
    identifier = props["DBClusterIdentifier" if flavour == "aurora-serverless" else "DBInstanceIdentifier"]
    assert identifier == f"pg-schema-deploy-{env}"
    # the database sits in the subnet group of the isolated subnets
    _, subnet_group = only(template, "AWS::RDS::DBSubnetGroup")
    database_subnets = {ref["Ref"] for ref in subnet_group["Properties"]["SubnetIds"]}
    assert database_subnets and all("databaseSubnet" in subnet for subnet in database_subnets)


def test_deletion_protection_and_removal_policies(synth: Synth, env: str) -> None:
    template = synth.json[env]
    flavour = flavour_of(synth)
    _, database = database_resource(template, flavour)
    _, rotation = only(template, "AWS::SecretsManager::RotationSchedule")
    log_groups = resources(template, "AWS::Logs::LogGroup")
    if env == "production":
        assert database["Properties"]["DeletionProtection"] is True
        assert database["DeletionPolicy"] == database["UpdateReplacePolicy"] == "Snapshot"
        # Kept after a delete (a retained database's secret keeps rotating) and a replacement, but
        # deleted by the rollback of a failed first create, so that the retry meets no leftover name.
        assert (rotation["DeletionPolicy"], rotation["UpdateReplacePolicy"]) == ("RetainExceptOnCreate", "Retain")
        assert {(group["DeletionPolicy"], group["UpdateReplacePolicy"]) for group in log_groups.values()} == {
            ("RetainExceptOnCreate", "Retain")
        }
        # deletion protection does not hold up that rollback: the guard turns it off first
        _, guard = only(template, "Custom::CreateRollbackGuard")
        assert guard["Properties"]["DatabaseIdentifier"] == {"Ref": database_resource(template, flavour)[0]}
        assert synth.stacks[env].termination_protection is True
    else:
        assert database["Properties"]["DeletionProtection"] is False
        assert database["DeletionPolicy"] == database["UpdateReplacePolicy"] == "Delete"
        assert rotation["DeletionPolicy"] == "Delete"
        assert {group["DeletionPolicy"] for group in log_groups.values()} == {"Delete"}
        assert synth.stacks[env].termination_protection is False
        assert not resources(template, "Custom::CreateRollbackGuard")
    if flavour == "rds-free":
        assert database["Properties"]["DeleteAutomatedBackups"] is (env == "testing")


def test_a_retained_database_is_kept_after_a_delete_but_not_after_a_failed_first_create(tmp_path: Path) -> None:
    """removal=retain: DeletionPolicy RetainExceptOnCreate, so a failed first create leaves nothing behind."""
    settings = dataclasses.replace(ENVIRONMENTS["production"], removal=Removal.RETAIN)
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    template = dict(Template.from_stack(DatabaseStack(app, settings)).to_json())

    _, database = database_resource(template, settings.flavour.value)
    assert (database["DeletionPolicy"], database["UpdateReplacePolicy"]) == ("RetainExceptOnCreate", "Retain")
    assert {group["DeletionPolicy"] for group in resources(template, "AWS::Logs::LogGroup").values()} == {
        "RetainExceptOnCreate"
    }


def test_log_groups_are_created_before_the_database(synth: Synth, env: str) -> None:
    template = synth.json[env]
    flavour = flavour_of(synth)
    _, database = database_resource(template, flavour)
    kind = "cluster" if flavour == "aurora-serverless" else "instance"
    names = {
        lid: group["Properties"]["LogGroupName"]
        for lid, group in resources(template, "AWS::Logs::LogGroup").items()
        if group["Properties"].get("LogGroupName", "").startswith("/aws/rds/")  # the functions': test_migration.py
    }
    exports = database["Properties"]["EnableCloudwatchLogsExports"]
    assert sorted(names.values()) == sorted(f"/aws/rds/{kind}/pg-schema-deploy-{env}/{log}" for log in exports)
    assert set(names) <= set(database["DependsOn"])
    retention = ENVIRONMENTS[env].log_retention_days
    assert {g["Properties"]["RetentionInDays"] for g in resources(template, "AWS::Logs::LogGroup").values()} == {
        retention
    }


def test_tls_and_logging_parameters(synth: Synth, env: str) -> None:
    template = synth.json[env]
    flavour = flavour_of(synth)
    group_type = "AWS::RDS::DBClusterParameterGroup" if flavour == "aurora-serverless" else "AWS::RDS::DBParameterGroup"
    group_id, group = only(template, group_type)
    assert group["Properties"]["Family"] == ("aurora-postgresql17" if flavour == "aurora-serverless" else "postgres17")
    parameters = group["Properties"]["Parameters"]
    assert parameters["rds.force_ssl"] == "1"
    assert parameters["log_min_duration_statement"] == "1000"
    assert parameters["log_connections"] == parameters["log_disconnections"] == "1"
    assert parameters["log_statement"] == "ddl"
    _, database = database_resource(template, flavour)
    key = "DBClusterParameterGroupName" if flavour == "aurora-serverless" else "DBParameterGroupName"
    assert database["Properties"][key] == {"Ref": group_id}


def test_master_password_is_managed_and_rotated_by_rds(synth: Synth, env: str) -> None:
    template = synth.json[env]
    database_id, database = database_resource(template, flavour_of(synth))
    properties = database["Properties"]
    assert properties["MasterUsername"] == "webapp"
    assert properties["ManageMasterUserPassword"] is True
    assert "MasterUserPassword" not in properties and "MasterUserSecret" not in properties  # aws/secretsmanager
    assert resources(template, "AWS::SecretsManager::Secret") == {}
    assert resources(template, "AWS::SecretsManager::SecretTargetAttachment") == {}
    _, rotation = only(template, "AWS::SecretsManager::RotationSchedule")
    assert rotation["Properties"] == {
        "SecretId": {"Fn::GetAtt": [database_id, "MasterUserSecret.SecretArn"]},
        "RotationRules": {"AutomaticallyAfterDays": 7},
        "RotateImmediatelyOnUpdate": False,
    }  # rules only: RDS rotates its own secret, no rotation function


def test_no_plaintext_password_anywhere(synth: Synth, env: str) -> None:
    template = synth.json[env]
    for path, value in walk(template):
        if not isinstance(value, dict):
            continue
        for key, item in value.items():
            if "password" in key.lower() and "/Properties" in path:  # not a logical id
                assert (key, item) == ("ManageMasterUserPassword", True), f"{path}/{key}: {json.dumps(item)}"
            if key == "SecretString":
                raise AssertionError(f"{path}: a secret with an inline SecretString")
    outputs = json.dumps(template["Outputs"])
    assert "resolve:secretsmanager" not in outputs and "SecretString" not in outputs


def test_security_groups_admit_postgres_only_from_the_clients_group(synth: Synth, env: str) -> None:
    template = synth.json[env]
    flavour = flavour_of(synth)
    # the database's two groups (the migration runner's own group: tests/infra/test_migration.py)
    groups = {
        lid: group
        for lid, group in resources(template, "AWS::EC2::SecurityGroup").items()
        if lid.startswith("Security")
    }
    assert len(groups) == 2
    clients_id = next(lid for lid in groups if lid.startswith("SecurityClients"))
    database_id = next(lid for lid in groups if lid.startswith("SecurityDatabase"))
    # no inline ingress at all; one ingress rule from the clients group
    assert all("SecurityGroupIngress" not in group["Properties"] for group in groups.values())
    ingress_rules = resources(template, "AWS::EC2::SecurityGroupIngress").values()
    (ingress,) = [
        rule for rule in ingress_rules if rule["Properties"]["SourceSecurityGroupId"]["Fn::GetAtt"][0] == clients_id
    ]
    assert ingress["Properties"] == {
        "Description": "PostgreSQL from the database clients group",
        "FromPort": DB_PORT,
        "ToPort": DB_PORT,
        "IpProtocol": "tcp",
        "GroupId": {"Fn::GetAtt": [database_id, "GroupId"]},
        "SourceSecurityGroupId": {"Fn::GetAtt": [clients_id, "GroupId"]},
    }
    # the database sends nothing (CDK's match-nothing rule replaces the default allow-all egress)
    assert not resources(template, "AWS::EC2::SecurityGroupEgress")
    assert groups[database_id]["Properties"]["SecurityGroupEgress"] == [
        {
            "CidrIp": "255.255.255.255/32",
            "Description": "Disallow all traffic",
            "FromPort": 252,
            "IpProtocol": "icmp",
            "ToPort": 86,
        }
    ]
    # membership of the clients group is the credential; its own egress stays open (see security.py)
    assert groups[clients_id]["Properties"]["SecurityGroupEgress"] == [
        {"CidrIp": "0.0.0.0/0", "Description": "Allow all outbound traffic by default", "IpProtocol": "-1"}
    ]
    ingress_json = json.dumps([g["Properties"].get("SecurityGroupIngress") for g in groups.values()])
    assert "0.0.0.0/0" not in ingress_json and "::/0" not in ingress_json
    _, database = database_resource(template, flavour)
    key = "VpcSecurityGroupIds" if flavour == "aurora-serverless" else "VPCSecurityGroups"
    assert database["Properties"][key] == [{"Fn::GetAtt": [database_id, "GroupId"]}]


def test_new_vpc_without_nat_and_isolated_database_subnets(synth: Synth, env: str) -> None:
    template = synth.json[env]
    assert not resources(template, "AWS::EC2::NatGateway")
    assert not resources(template, "AWS::EC2::VPCEndpoint")
    assert len(resources(template, "AWS::EC2::VPC")) == 1
    subnets = resources(template, "AWS::EC2::Subnet")
    database_subnets = {lid for lid in subnets if lid.startswith("NetworkVpcdatabaseSubnet")}
    assert len(database_subnets) == 2
    for subnet_id in database_subnets:
        assert subnets[subnet_id]["Properties"]["MapPublicIpOnLaunch"] is False
    # isolated: the database subnets' route tables have no routes at all
    associations = resources(template, "AWS::EC2::SubnetRouteTableAssociation").values()
    database_tables = {
        a["Properties"]["RouteTableId"]["Ref"]
        for a in associations
        if a["Properties"]["SubnetId"]["Ref"] in database_subnets
    }
    routed_tables = {r["Properties"]["RouteTableId"]["Ref"] for r in resources(template, "AWS::EC2::Route").values()}
    assert database_tables and not database_tables & routed_tables
    # VPC flow logs of rejected traffic
    (flow_log,) = resources(template, "AWS::EC2::FlowLog").values()
    assert flow_log["Properties"]["TrafficType"] == "REJECT"


def test_outputs_for_applications(synth: Synth, env: str) -> None:
    template = synth.json[env]
    flavour = flavour_of(synth)
    outputs = template["Outputs"]
    assert set(outputs) == {
        "DatabaseEndpoint",
        "DatabasePort",
        "DatabaseName",
        "DatabaseUser",
        "DatabaseSecretArn",
        "ApplicationUser",
        "ApplicationConnectPolicyArn",
        "ReadOnlyUser",
        "ReadOnlyConnectPolicyArn",
        "DatabaseClientsSecurityGroupId",
        "DatabaseFlavour",
        "DatabaseIdentifier",
        "PostgresVersion",
        "VpcId",
        "SchemaVersion",
        "MigrationsApplied",
        "MigrationFunctionName",
    }
    for name, output in outputs.items():
        if name not in ("SchemaVersion", "MigrationsApplied", "MigrationFunctionName"):  # test_migration.py
            assert output["Export"] == {"Name": f"PgSchemaDeploy-{env}-{name}"}
    database_id, _ = database_resource(template, flavour)
    endpoint_attribute = "Endpoint.Address"
    assert outputs["DatabaseEndpoint"]["Value"] == {"Fn::GetAtt": [database_id, endpoint_attribute]}
    assert outputs["DatabasePort"]["Value"] == {"Fn::GetAtt": [database_id, "Endpoint.Port"]}
    assert outputs["DatabaseName"]["Value"] == f"users_{env}"
    assert outputs["DatabaseIdentifier"]["Value"] == {"Ref": database_id}  # the cluster's / instance's name
    assert outputs["DatabaseUser"]["Value"] == "webapp"
    assert outputs["DatabaseSecretArn"]["Value"] == {"Fn::GetAtt": [database_id, "MasterUserSecret.SecretArn"]}
    assert outputs["ApplicationUser"]["Value"] == "webapp_app"
    assert outputs["ReadOnlyUser"]["Value"] == "webapp_readonly"
    clients_id = next(
        lid for lid in resources(template, "AWS::EC2::SecurityGroup") if lid.startswith("SecurityClients")
    )
    assert outputs["DatabaseClientsSecurityGroupId"]["Value"] == {"Fn::GetAtt": [clients_id, "GroupId"]}
    assert outputs["DatabaseFlavour"]["Value"] == flavour
    assert outputs["PostgresVersion"]["Value"] == POSTGRES_VERSION


def test_tags(synth: Synth, env: str) -> None:
    synth.templates[env].has_resource_properties(
        "AWS::EC2::VPC",
        {
            "Tags": Match.array_with(
                [{"Key": "environment", "Value": env}, {"Key": "project", "Value": "pg-schema-deploy"}]
            )
        },
    )


@pytest.mark.parametrize(("output", "user"), [("ApplicationConnectPolicyArn", "webapp_app"),
                                              ("ReadOnlyConnectPolicyArn", "webapp_readonly")])  # fmt: skip
def test_each_login_has_a_policy_to_connect_as_that_user_only(synth: Synth, env: str, output: str, user: str) -> None:
    template = synth.json[env]
    flavour = flavour_of(synth)
    database_id, _ = database_resource(template, flavour)
    resource_id = "DBClusterResourceId" if flavour == "aurora-serverless" else "DbiResourceId"
    policy_id = template["Outputs"][output]["Value"]["Ref"]
    policy = template["Resources"][policy_id]
    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert policy["Properties"]["PolicyDocument"]["Statement"] == [
        {
            "Action": "rds-db:connect",
            "Effect": "Allow",
            "Resource": {
                "Fn::Join": ["", ["arn:", {"Ref": "AWS::Partition"}, ":rds-db:", {"Ref": "AWS::Region"}, ":",
                                  {"Ref": "AWS::AccountId"}, ":dbuser:", {"Fn::GetAtt": [database_id, resource_id]},
                                  f"/{user}"]]
            },
        }
    ]
    assert not {"Roles", "Users", "Groups"} & set(policy["Properties"])  # attached by the application's stack
    assert template["Outputs"][output]["Export"] == {"Name": f"PgSchemaDeploy-{env}-{output}"}
