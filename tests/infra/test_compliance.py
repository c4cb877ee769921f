"""cdk-nag (AwsSolutions) and cfn-lint on every synthesized template: zero findings."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Stack, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_rds as rds
from cfnlint.api import lint

from stacks.compliance import acknowledge, add_nag_checks

from .conftest import Synth

# The deploy-time migration's, the same on both flavours (stacks/migration/schema_migration.py).
MIGRATION_ACKNOWLEDGMENTS = {
    (f"PgSchemaDeploy-{env}/SchemaMigration/{path}", rule)
    for env in ("testing", "production")
    for path, rule in (
        ("Deploy", "AwsSolutions-L1"),
        ("Runner", "AwsSolutions-L1"),
        ("RunnerRole", "AwsSolutions-IAM5[Resource::*]"),
        ("ProviderRole", "AwsSolutions-IAM5[Resource::<SchemaMigrationDeploy9D9F654B.Arn>:*]"),
        ("ProviderWaiterRole", "AwsSolutions-IAM5[Resource::<SchemaMigrationDeploy9D9F654B.Arn>:*]"),
        ("Provider/waiter-state-machine",
         "AwsSolutions-IAM5[Resource::<SchemaMigrationProviderframeworkisCompleteC9F658F2.Arn>:*]"),
        ("Provider/waiter-state-machine",
         "AwsSolutions-IAM5[Resource::<SchemaMigrationProviderframeworkonTimeout9BDF4833.Arn>:*]"),
        ("Provider/waiter-state-machine", "AwsSolutions-SF1"),
        ("Provider/waiter-state-machine", "AwsSolutions-SF2"),
    )
}

# Every acknowledgment the app makes, per flavour: a new one must be reviewed and listed here.
EXPECTED_ACKNOWLEDGMENTS = {
    "aurora-serverless": {
        ("PgSchemaDeploy-testing/Database/Cluster", "AwsSolutions-RDS10"),
    },
    "rds-free": {
        ("PgSchemaDeploy-testing/Database/Instance", "AwsSolutions-RDS3"),
        ("PgSchemaDeploy-testing/Database/Instance", "AwsSolutions-RDS10"),
        ("PgSchemaDeploy-testing/Database/Instance", "AwsSolutions-RDS11"),
        ("PgSchemaDeploy-production/Database/Instance", "AwsSolutions-RDS3"),
        ("PgSchemaDeploy-production/Database/Instance", "AwsSolutions-RDS11"),
    },
}


def acknowledgments(app: App) -> dict[tuple[str, str], str]:
    """(construct path, rule id) -> reason, for every cdk-nag acknowledgment in the tree.

    aws-cdk-lib stores un-prefixed ids as ``Annotation::<id>`` and acknowledges some of its own
    validation rules (``CloudFormation-Validate::...``); only the AwsSolutions ones are ours.
    """
    found: dict[tuple[str, str], str] = {}
    for construct in app.node.find_all():
        for entry in construct.node.metadata:
            if entry.type == Validations.ACKNOWLEDGED_RULES_METADATA_KEY:
                for rule_id, reason in dict(entry.data).items():
                    plain = rule_id.removeprefix("Annotation::")
                    if plain.startswith("AwsSolutions-"):
                        found[(construct.node.path, plain)] = reason
    return found


def test_cdk_nag_reports_nothing(synth: Synth) -> None:
    report = synth.nag_report
    findings = [(v.rule_name, [r.construct_path for r in v.violating_resources]) for v in report.violations]
    assert report.success and not findings


def test_every_acknowledgment_is_expected_and_explained(synth: Synth) -> None:
    flavour = next(iter(synth.stacks.values())).settings.flavour.value
    found = acknowledgments(synth.app)
    assert set(found) == EXPECTED_ACKNOWLEDGMENTS[flavour] | MIGRATION_ACKNOWLEDGMENTS
    for (path, rule_id), reason in found.items():
        assert len(reason) >= 80, f"{path} {rule_id}: reason too vague: {reason!r}"


def test_cfn_lint_reports_nothing(synth: Synth) -> None:
    for name, template in synth.json.items():
        matches = lint(json.dumps(template), regions=["us-east-1", "eu-west-1"])
        assert not matches, f"{name}: " + "\n".join(str(match) for match in matches)


def test_the_nag_plugin_fails_synth_on_an_unacknowledged_finding(tmp_path: Any) -> None:
    """Proves the plugin wiring is live: an unencrypted cluster without IAM auth fails the synth."""
    app = App(outdir=str(tmp_path))
    stack = Stack(app, "Bad")
    vpc = ec2.Vpc(stack, "Vpc", nat_gateways=0)
    rds.DatabaseCluster(
        stack,
        "Cluster",
        engine=rds.DatabaseClusterEngine.aurora_postgres(version=rds.AuroraPostgresEngineVersion.VER_17_9),
        writer=rds.ClusterInstance.serverless_v2("writer"),
        vpc=vpc,
        vpc_subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
        storage_encrypted=False,
    )
    add_nag_checks(app)
    with pytest.raises(RuntimeError, match=r"AwsSolutions-RDS2|storage encryption"):
        app.synth()


def test_acknowledgments_need_a_reason() -> None:
    app = App()
    with pytest.raises(ValueError, match="needs a specific reason"):
        acknowledge(Stack(app, "S"), "AwsSolutions-RDS11", "fine")
