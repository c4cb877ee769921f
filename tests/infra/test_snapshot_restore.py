"""An environment whose database is created from a snapshot of an existing one (the old setup
scripts' database): the restored cluster/instance is the new one's twin but for where its data, its
master user and its databases come from; RDS still keeps and rotates the master password; the runner
learns the first deploy's baseline. cdk-nag and cfn-lint stay clean."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path

import pytest
from aws_cdk import App
from aws_cdk.assertions import Template
from cfnlint.api import lint

from stacks.database_stack import DatabaseStack
from stacks.migration.schema_migration import DEPLOY_HANDLER, RUNNER_HANDLER
from stacks.settings import ENVIRONMENTS, DatabaseAccess, Flavour, SettingsError, SnapshotRestore

from .conftest import Synth, cdk_json_context, synthesize
from .helpers import only, walk
from .test_compliance import EXPECTED_ACKNOWLEDGMENTS, MIGRATION_ACKNOWLEDGMENTS, acknowledgments

CLUSTER_SNAPSHOT = "arn:aws:rds:us-east-1:123456789012:cluster-snapshot:users-production-final"
DB_SNAPSHOT = "users-production-final"
BASELINE = "002_add_user_profile"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-3333-4444-555555555555"
# What CloudFormation takes from the snapshot (and forbids beside SnapshotIdentifier / DBSnapshotIdentifier).
FROM_THE_SNAPSHOT = {
    "aurora-serverless": (
        "AWS::RDS::DBCluster", "SnapshotIdentifier", CLUSTER_SNAPSHOT, ("MasterUsername", "DatabaseName")
    ),
    "rds-free": ("AWS::RDS::DBInstance", "DBSnapshotIdentifier", DB_SNAPSHOT, ("MasterUsername", "DBName")),
}


@pytest.fixture(scope="module", params=list(FROM_THE_SNAPSHOT))
def restored(request: pytest.FixtureRequest, synth_cache: dict[str, Synth]) -> tuple[str, Synth, Synth]:
    """(flavour, production restored from a snapshot with a baseline, the same app without)."""
    flavour = request.param
    snapshot = FROM_THE_SNAPSHOT[flavour][2]
    context = {"database": flavour, "snapshot.production": snapshot, "baseline_version.production": BASELINE}
    if flavour not in synth_cache:
        synth_cache[flavour] = synthesize({"database": flavour})
    return flavour, synthesize(context), synth_cache[flavour]


def test_the_restored_database_is_the_new_one_but_for_the_snapshot(restored: tuple[str, Synth, Synth]) -> None:
    flavour, synth, new = restored
    resource_type, snapshot_property, snapshot, forbidden = FROM_THE_SNAPSHOT[flavour]
    logical_id, database = only(synth.json["production"], resource_type)
    new_id, new_database = only(new.json["production"], resource_type)
    properties = database["Properties"]

    assert properties[snapshot_property] == snapshot
    assert properties["ManageMasterUserPassword"] is True  # RDS keeps the password (a new one) and rotates it
    assert not set(forbidden) & set(properties) and "MasterUserPassword" not in properties
    identifier = "DBClusterIdentifier" if flavour == "aurora-serverless" else "DBInstanceIdentifier"
    # The fixed physical name: CloudFormation refuses to replace it, so a changed or removed snapshot
    # setting fails the deploy instead of swapping the database for a new one.
    assert properties[identifier] == "pg-schema-deploy-production"
    assert properties["StorageEncrypted"] is True and properties["EnableIAMDatabaseAuthentication"] is True
    # Everything else as for a new database: same logical id, properties, policies, dependencies.
    assert logical_id == new_id
    expected = copy.deepcopy(new_database)
    for name in forbidden:
        del expected["Properties"][name]
    expected["Properties"][snapshot_property] = snapshot
    assert database == expected


def test_the_rest_of_the_stack_is_unchanged_but_for_the_runners_baseline(restored: tuple[str, Synth, Synth]) -> None:
    flavour, synth, new = restored
    resource_type = FROM_THE_SNAPSHOT[flavour][0]
    assert synth.json["testing"] == new.json["testing"]
    template, before = copy.deepcopy(synth.json["production"]), copy.deepcopy(new.json["production"])
    for each in (template, before):
        del each["Resources"][only(each, resource_type)[0]]
    handlers = {r["Properties"].get("Handler"): r["Properties"] for r in template["Resources"].values()}
    runner, deploy = handlers[RUNNER_HANDLER], handlers[DEPLOY_HANDLER]
    assert runner["Environment"]["Variables"].pop("BASELINE_VERSION") == BASELINE
    assert "BASELINE_VERSION" not in deploy["Environment"]["Variables"]
    assert template == before


def test_the_master_secret_is_the_one_rds_keeps_and_no_secret_is_in_the_template(
    restored: tuple[str, Synth, Synth],
) -> None:
    flavour, synth, _ = restored
    template = synth.json["production"]
    database_id, _ = only(template, FROM_THE_SNAPSHOT[flavour][0])
    managed = {"Fn::GetAtt": [database_id, "MasterUserSecret.SecretArn"]}
    _, rotation = only(template, "AWS::SecretsManager::RotationSchedule")
    assert rotation["Properties"]["SecretId"] == managed
    assert rotation["Properties"]["RotationRules"] == {"AutomaticallyAfterDays": 7}
    assert template["Outputs"]["DatabaseSecretArn"]["Value"] == managed
    assert template["Outputs"]["DatabaseUser"]["Value"] == "webapp"  # the old scripts' master user too
    assert not [path for path, _ in walk(template) if path.endswith(("/MasterUserPassword", "/SecretString"))]
    assert "resolve:secretsmanager" not in json.dumps(template)
    assert not [r for r in template["Resources"].values() if r["Type"] == "AWS::SecretsManager::Secret"]


def test_cdk_nag_and_cfn_lint_stay_clean(restored: tuple[str, Synth, Synth]) -> None:
    flavour, synth, _ = restored
    assert synth.nag_report.success and not synth.nag_report.violations
    assert set(acknowledgments(synth.app)) == EXPECTED_ACKNOWLEDGMENTS[flavour] | MIGRATION_ACKNOWLEDGMENTS
    for name, template in synth.json.items():
        matches = lint(json.dumps(template), regions=["us-east-1", "eu-west-1"])
        assert not matches, f"{name}: " + "\n".join(str(match) for match in matches)


@pytest.mark.parametrize("flavour", list(FROM_THE_SNAPSHOT))
def test_a_customer_managed_key_for_the_master_secret_and_a_database_named_by_the_snapshot(
    tmp_path: Path, flavour: str
) -> None:
    resource_type, _, snapshot, _ = FROM_THE_SNAPSHOT[flavour]
    settings = dataclasses.replace(
        ENVIRONMENTS["testing"],
        flavour=Flavour(flavour),
        access=DatabaseAccess(master_secret_kms_key_arn=KEY_ARN),
        restore=SnapshotRestore(snapshot, BASELINE, database_name="users_production"),
    )
    app = App(context=cdk_json_context(), outdir=str(tmp_path))
    template = dict(Template.from_stack(DatabaseStack(app, settings)).to_json())
    _, database = only(template, resource_type)
    assert database["Properties"]["MasterUserSecret"] == {"KmsKeyId": KEY_ARN}
    assert template["Outputs"]["DatabaseName"]["Value"] == "users_production"
    functions = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "AWS::Lambda::Function"]
    names = {f["Environment"]["Variables"].get("DATABASE_NAME") for f in functions if "Environment" in f}
    assert "users_production" in names and "users_testing" not in names


def test_a_baseline_version_that_names_no_migration_stops_the_synth(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        ENVIRONMENTS["production"], restore=SnapshotRestore(CLUSTER_SNAPSHOT, "004_add_orders")
    )
    refused = r"production: baseline_version='004_add_orders' names no migration in database/migrations \(the newest"
    with pytest.raises(SettingsError, match=refused + r" is 003_add_savings_groups\)"):
        DatabaseStack(App(context=cdk_json_context(), outdir=str(tmp_path)), settings)

