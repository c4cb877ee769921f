"""stacks/settings.py DatabaseAccess: the logins' names, the rotation interval and a customer managed
key for the master secret, checked when settings are made and carried into the template."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template

from stacks.compliance import add_nag_checks
from stacks.database_stack import DatabaseStack
from stacks.settings import ENVIRONMENTS, DatabaseAccess, SettingsError

from .conftest import cdk_json_context
from .helpers import only, resources
from .test_migration import migration_of

KEY_ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def test_defaults_are_the_issues() -> None:
    access = DatabaseAccess()
    assert (access.application_role, access.readonly_role) == ("webapp_app", "webapp_readonly")
    assert access.master_password_rotation_days == 7 and access.master_secret_kms_key_arn is None
    assert all(env.access == access for env in ENVIRONMENTS.values())


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"application_role": "Web-App"}, r"application_role='Web-App': a PostgreSQL role name"),
        ({"readonly_role": "pg_reader"}, r"readonly_role='pg_reader': .*not starting with a digit or pg_"),
        ({"application_role": "webapp"}, r"application_role='webapp': that role exists already"),
        ({"readonly_role": "rds_iam"}, r"readonly_role='rds_iam': that role exists already"),
        ({"readonly_role": "webapp_app"}, r"application_role and readonly_role are both 'webapp_app'"),
        ({"master_password_rotation_days": 0}, r"master_password_rotation_days=0: must be 1 to 365"),
        ({"master_secret_kms_key_arn": "alias/mine"}, r"'alias/mine' is not a KMS key ARN"),
    ],
)
def test_bad_access_settings_are_refused(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        DatabaseAccess(**changes)


def synth_with(tmp_path: Path, access: DatabaseAccess, flavour: str) -> dict[str, Any]:
    from stacks.settings import Flavour

    settings = dataclasses.replace(ENVIRONMENTS["production"], access=access, flavour=Flavour(flavour))
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    add_nag_checks(app)  # an unacknowledged finding fails the synth below
    template = dict(Template.from_stack(DatabaseStack(app, settings)).to_json())
    return template


@pytest.mark.parametrize("flavour", ["aurora-serverless", "rds-free"])
def test_own_names_interval_and_key_reach_the_template(tmp_path: Path, flavour: str) -> None:
    access = DatabaseAccess(
        application_role="shop", readonly_role="shop_reports", master_password_rotation_days=30,
        master_secret_kms_key_arn=KEY_ARN,
    )  # fmt: skip
    template = synth_with(tmp_path, access, flavour)

    database_type = "AWS::RDS::DBCluster" if flavour == "aurora-serverless" else "AWS::RDS::DBInstance"
    database_id, database = only(template, database_type)
    assert database["Properties"]["MasterUserSecret"] == {"KmsKeyId": KEY_ARN}
    _, rotation = only(template, "AWS::SecretsManager::RotationSchedule")
    assert rotation["Properties"]["RotationRules"] == {"AutomaticallyAfterDays": 30}
    outputs = template["Outputs"]
    assert (outputs["ApplicationUser"]["Value"], outputs["ReadOnlyUser"]["Value"]) == ("shop", "shop_reports")
    policies = resources(template, "AWS::IAM::ManagedPolicy").values()
    users = sorted(p["Properties"]["PolicyDocument"]["Statement"][0]["Resource"]["Fn::Join"][1][-1] for p in policies)
    assert users == ["/shop", "/shop_reports"]
    migration = migration_of(template)
    assert migration.properties["DatabaseRoles"] == {"Application": "shop", "ReadOnly": "shop_reports"}
    # the deploy function may decrypt with that key, through Secrets Manager only
    secret_arn = {"Fn::GetAtt": [database_id, "MasterUserSecret.SecretArn"]}
    statements = migration.statements(migration.deploy_id)
    assert {"Action": "secretsmanager:GetSecretValue", "Effect": "Allow", "Resource": secret_arn} in statements
    assert {
        "Action": "kms:Decrypt",
        "Condition": {"StringEquals": {"kms:ViaService": {"Fn::Join": ["", ["secretsmanager.", {"Ref": "AWS::Region"},
                                                                            ".amazonaws.com"]]}}},
        "Effect": "Allow",
        "Resource": KEY_ARN,
    } in statements  # fmt: skip
    assert len([s for s in statements if "kms" in str(s["Action"])]) == 1
