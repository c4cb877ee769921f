"""The settings module on its own: pure Python, validated, overridable from the command line."""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import re
import subprocess
import sys

import pytest

from stacks import settings
from stacks.settings import (
    ENVIRONMENTS,
    POSTGRES_MAJOR_VERSION,
    POSTGRES_VERSION,
    AuroraCapacity,
    ContextError,
    Flavour,
    NetworkSettings,
    RdsInstance,
    Removal,
    SettingsError,
    SnapshotRestore,
    apply_context,
    aurora_supports_scale_to_zero,
)

from .conftest import ROOT


def test_settings_import_does_not_load_aws_cdk() -> None:
    """The migration runner imports stacks.settings for the version: it must stay cheap."""
    code = (
        "import sys; import stacks.settings as s; "
        "assert not [m for m in sys.modules if m.startswith(('aws_cdk', 'jsii', 'constructs', 'cdk_nag'))], "
        "sorted(sys.modules); print(s.POSTGRES_MAJOR_VERSION)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(POSTGRES_MAJOR_VERSION)


def test_one_engine_version_for_everything() -> None:
    assert POSTGRES_VERSION == "17.9"
    assert POSTGRES_MAJOR_VERSION == 17
    assert {env.engine_version for env in ENVIRONMENTS.values()} == {POSTGRES_VERSION}


def test_environments_and_their_differences() -> None:
    assert list(ENVIRONMENTS) == ["testing", "production"]
    testing, production = ENVIRONMENTS["testing"], ENVIRONMENTS["production"]
    assert testing.stack_name == "PgSchemaDeploy-testing"
    assert production.stack_name == "PgSchemaDeploy-production"
    assert (testing.database_name, testing.username) == ("users_testing", "webapp")
    assert production.database_name == "users_production"
    assert testing.aurora.scales_to_zero and not production.aurora.scales_to_zero
    assert production.aurora.min_acu >= 0.5
    assert not testing.deletion_protection and production.deletion_protection
    assert testing.removal is Removal.DESTROY and production.removal is Removal.SNAPSHOT
    assert production.backup_retention_days > testing.backup_retention_days
    for env in (testing, production):
        assert env.network.vpc_id is None and env.network.nat_gateways == 0
        assert env.rds.instance_class == "db.t3.micro" and env.rds.allocated_storage_gib == 20


@pytest.mark.parametrize(
    ("version", "supported"),
    [
        ("13.14", False),
        ("13.15", True),
        ("14.11", False),
        ("14.12", True),
        ("15.6", False),
        ("15.7", True),
        ("16.2", False),
        ("16.3", True),
        ("17.1", True),
        ("17.9", True),
        ("18.3", True),
        ("12.22", False),
    ],
)
def test_aurora_scale_to_zero_versions(version: str, supported: bool) -> None:
    assert aurora_supports_scale_to_zero(version) is supported


def test_zero_acu_on_an_old_engine_version_is_refused() -> None:
    """The guard aws-cdk-lib does not do for min capacity 0: a clear error naming the version."""
    testing = ENVIRONMENTS["testing"]
    with pytest.raises(SettingsError, match=r"Aurora PostgreSQL 16\.2 cannot scale to 0 ACU"):
        dataclasses.replace(testing, engine_version="16.2")
    # The same version is fine with a 0.5 ACU floor, and for the RDS flavour.
    dataclasses.replace(testing, engine_version="16.2", aurora=AuroraCapacity(min_acu=0.5, max_acu=2))
    dataclasses.replace(testing, engine_version="16.2", flavour=Flavour.RDS_FREE)


def test_engine_version_format_and_major() -> None:
    assert dataclasses.replace(ENVIRONMENTS["production"], engine_version="18.3").major_version == 18
    assert ENVIRONMENTS["testing"].major_version == POSTGRES_MAJOR_VERSION
    with pytest.raises(SettingsError, match=r"MAJOR\.MINOR"):
        dataclasses.replace(ENVIRONMENTS["production"], engine_version="17")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_acu": 0, "max_acu": 2}, "needs auto_pause_seconds"),
        ({"min_acu": 0, "max_acu": 2, "auto_pause_seconds": 299}, "300 to 86400"),
        ({"min_acu": 0, "max_acu": 2, "auto_pause_seconds": 86_401}, "300 to 86400"),
        ({"min_acu": 0.5, "max_acu": 2, "auto_pause_seconds": 600}, "only applies with min_acu=0"),
        ({"min_acu": 0.25, "max_acu": 2}, "steps of 0.5"),
        ({"min_acu": 4, "max_acu": 2}, "at least min_acu"),
        ({"min_acu": 0.5, "max_acu": 300}, "0 to 256"),
    ],
)
def test_aurora_capacity_validation(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        AuroraCapacity(**kwargs)  # type: ignore[arg-type]


def test_rds_and_network_validation() -> None:
    assert RdsInstance("db.t4g.micro").cdk_instance_type == "t4g.micro"
    with pytest.raises(SettingsError, match=r"db\.t3\.micro, db\.t4g\.micro"):
        RdsInstance("db.m5.large")
    with pytest.raises(SettingsError, match="20 to 6144"):
        RdsInstance(allocated_storage_gib=10)
    with pytest.raises(SettingsError, match="not a VPC id"):
        NetworkSettings(vpc_id="subnet-123")
    with pytest.raises(SettingsError, match="at least 2 AZs"):
        NetworkSettings(max_azs=1)
    with pytest.raises(SettingsError, match="log_retention_days=10"):
        dataclasses.replace(ENVIRONMENTS["testing"], log_retention_days=10)


def test_no_context_changes_nothing() -> None:
    assert apply_context({}) == tuple(ENVIRONMENTS.values())
    # Keys that are not ours (CDK feature flags) are ignored.
    assert apply_context({"@aws-cdk/core:checkSecretUsage": True}) == tuple(ENVIRONMENTS.values())


def test_database_override_for_all_and_per_environment() -> None:
    testing, production = apply_context({"database": "rds-free"})
    assert testing.flavour is production.flavour is Flavour.RDS_FREE
    testing, production = apply_context({"database": "rds-free", "database.production": "aurora-serverless"})
    assert testing.flavour is Flavour.RDS_FREE
    assert production.flavour is Flavour.AURORA_SERVERLESS


def test_vpc_and_instance_class_overrides() -> None:
    testing, production = apply_context(
        {"vpc_id.testing": "vpc-0123456789abcdef0", "rds_instance_class": "db.t4g.micro",
         "database.testing": "rds-free"}
    )
    assert testing.network.vpc_id == "vpc-0123456789abcdef0"
    assert production.network.vpc_id is None
    assert testing.rds.instance_class == "db.t4g.micro" and testing.flavour is settings.Flavour.RDS_FREE


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"rds_instance_class": "db.t4g.micro"},
         "'rds_instance_class' applies to the rds-free flavour, but testing and production run aurora-serverless: "
         "add -c database=rds-free or drop the key"),
        ({"rds_instance_class.production": "db.t4g.micro", "database.testing": "rds-free"},
         "'rds_instance_class.production' applies to the rds-free flavour, but production runs aurora-serverless: "
         "add -c database.production=rds-free"),
    ],
)
def test_an_instance_class_for_an_aurora_environment_is_refused(context: dict[str, object], message: str) -> None:
    with pytest.raises(ContextError, match=re.escape(message)):
        apply_context(context)


def test_every_environment_has_its_own_vpc_range() -> None:
    """Overlapping ranges could never be peered or joined to one transit network."""
    ranges = [ipaddress.ip_network(env.network.cidr) for env in settings.ENVIRONMENTS.values()]
    assert all(not first.overlaps(second) for first, second in itertools.combinations(ranges, 2))


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"database": "mysql"}, r"context key 'database'='mysql': allowed values are aurora-serverless, rds-free"),
        ({"database.testing": "aurora"}, r"'database.testing'='aurora': allowed values are aurora-serverless"),
        ({"database.staging": "rds-free"}, r"'database.staging' names no environment: allowed are database.testing"),
        ({"vpc_id": "my-vpc"}, r"context key 'vpc_id': vpc_id='my-vpc' is not a VPC id"),
        ({"rds_instance_class": "db.t3.small", "database": "rds-free"},
         r"'rds_instance_class'='db.t3.small': allowed values are db.t3.micro"),
        ({"database": 3}, r"context key 'database' must be a string"),
    ],
)
def test_bad_context_values_name_the_key_and_the_allowed_values(context: dict[str, object], message: str) -> None:
    with pytest.raises(ContextError, match=message):
        apply_context(context)


CLUSTER_SNAPSHOT_ARN = "arn:aws:rds:us-east-1:123456789012:cluster-snapshot:users-production-final"
DB_SNAPSHOT_ARN = "arn:aws:rds:us-east-1:123456789012:snapshot:users-production-final"


def test_a_snapshot_and_a_baseline_per_environment_from_the_context() -> None:
    testing, production = apply_context(
        {"snapshot.production": CLUSTER_SNAPSHOT_ARN, "baseline_version.production": "004_add_orders"}
    )
    assert testing.restore == SnapshotRestore() and testing.database_name == "users_testing"
    assert production.restore == SnapshotRestore(CLUSTER_SNAPSHOT_ARN, "004_add_orders")
    assert production.restore.snapshot_kind == "cluster-snapshot" and production.database_name == "users_production"
    _, rds = apply_context({"database.production": "rds-free", "snapshot.production": "users-production-final"})
    assert rds.restore.snapshot == "users-production-final" and rds.restore.snapshot_kind is None


@pytest.mark.parametrize(
    "snapshot",
    [CLUSTER_SNAPSHOT_ARN, DB_SNAPSHOT_ARN, "users-production-final", "rds:pg-old-2026-11-20-03-10",
     "arn:aws-cn:rds:cn-north-1:123456789012:snapshot:rds:old-2026-11-20"],
)  # fmt: skip
def test_snapshot_identifiers_and_arns_are_accepted(snapshot: str) -> None:
    assert SnapshotRestore(snapshot).snapshot == snapshot


@pytest.mark.parametrize(
    ("restore", "message"),
    [
        ({"snapshot": "old--db"}, r"snapshot='old--db' is neither a snapshot identifier .* nor a snapshot ARN"),
        ({"snapshot": "1st-db"}, r"snapshot='1st-db' is neither a snapshot identifier"),
        ({"snapshot": "arn:aws:rds:us-east-1:123:snapshot:x"}, r"is neither a snapshot identifier"),
        ({"snapshot": "x", "baseline_version": "004"}, r"baseline_version='004' is not a migration version: .*NNN_"),
        ({"snapshot": "x", "baseline_version": "add_orders"}, r"baseline_version='add_orders' is not a migration"),
        ({"snapshot": "x", "baseline_version": "004_add_orders.sql"}, r"is not a migration version"),
        ({"baseline_version": "004_add_orders"}, r"baseline_version='004_add_orders' applies to a database created "
                                                 r"from a snapshot, and no snapshot is set"),
        ({"database_name": "users_production"}, r"database_name='users_production' applies to a database created"),
        ({"snapshot": "x", "database_name": "users-production"}, r"restore database_name='users-production': a "),
    ],
)  # fmt: skip
def test_snapshot_restore_validation_names_the_setting(restore: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        SnapshotRestore(**restore)


def test_a_cluster_snapshot_for_an_rds_environment_is_refused() -> None:
    refused = r"production: snapshot='arn:.*:cluster-snapshot:.*' is a DB cluster snapshot \(Aurora\); the rds-free"
    with pytest.raises(SettingsError, match=refused + " flavour restores a DB snapshot"):
        apply_context({"database.production": "rds-free", "snapshot.production": CLUSTER_SNAPSHOT_ARN})
    # the other way round is RDS for PostgreSQL into Aurora, which a DB snapshot's ARN allows
    assert apply_context({"snapshot.production": DB_SNAPSHOT_ARN})[1].restore.snapshot_kind == "snapshot"


def test_a_restored_environment_runs_migrations_in_the_snapshot_database() -> None:
    restored = dataclasses.replace(
        ENVIRONMENTS["testing"], restore=SnapshotRestore(CLUSTER_SNAPSHOT_ARN, database_name="users_production")
    )
    assert restored.database_name == "users_production" and restored.username == "webapp"


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"snapshot.production": "my_snapshot"}, r"context key 'snapshot.production' \(production\): snapshot="),
        ({"baseline_version": "004_add_orders"},
         r"context key 'baseline_version' \(testing\): baseline_version='004_add_orders' applies to a database "
         r"created from a snapshot"),
        ({"snapshot.production": "x", "baseline_version.production": "four"},
         r"context key 'baseline_version.production' \(production\): baseline_version='four' is not a migration"),
        ({"snapshot.staging": "x"}, r"'snapshot.staging' names no environment: allowed are snapshot.testing"),
    ],
)  # fmt: skip
def test_bad_snapshot_context_values_name_the_key(context: dict[str, object], message: str) -> None:
    with pytest.raises(ContextError, match=message):
        apply_context(context)


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.TESTING.name = "staging"  # type: ignore[misc]


# What `npx cdk synth -c databse=rds-free` passes the app (CDK_CONTEXT_JSON, aws-cdk 2.1148): cdk.json's
# feature flags, the CLI's own aws:cdk:* keys and the -c key.
CDK_CLI_CONTEXT = {
    "@aws-cdk/core:checkSecretUsage": True,
    "@aws-cdk/core:target-partitions": ["aws", "aws-cn"],
    "aws:cdk:enable-path-metadata": True,
    "aws:cdk:enable-asset-metadata": True,
    "aws:cdk:version-reporting": True,
    "aws:cdk:bundling-stacks": ["**"],
    "@aws-cdk/core:failSynthOnValidationErrors": False,
    "vpc-provider:account=123456789012:filter.vpc-id=vpc-0123456789abcdef0:region=us-east-1": {"vpcId": "x"},
    "acknowledged-issue-numbers": [32775],
}


def test_cdk_context_keys_pass_and_known_keys_are_accepted() -> None:
    settings.check_known_context_keys(
        {**CDK_CLI_CONTEXT, "database": "rds-free", "database.testing": "aurora-serverless", "github_repo": "o/r"},
        known=("database", "github_repo"),
        per_environment=("database",),
    )


@pytest.mark.parametrize("key", ["databse", "databse.testing", "vpcid.production", "github_repo.testing"])
def test_unknown_context_key_is_refused_with_the_known_keys(key: str) -> None:
    with pytest.raises(ContextError) as refused:
        settings.check_known_context_keys(
            {**CDK_CLI_CONTEXT, key: "x"}, known=("database", "github_repo"), per_environment=("database",)
        )
    assert str(refused.value) == (
        f"unknown context key {key!r}: known keys are database[.<environment>], github_repo "
        "(environments: testing, production)"
    )


def test_synth_with_a_misspelled_context_key_stops_naming_the_known_keys() -> None:
    """The app as `npx cdk synth -c databse=rds-free` runs it, context passed the CLI's way."""
    import json
    import os

    environment = {**os.environ, "CDK_CONTEXT_JSON": json.dumps({**CDK_CLI_CONTEXT, "databse": "rds-free"})}
    result = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, capture_output=True, text=True, env=environment, check=False, timeout=120
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown context key 'databse': known keys are ")
    for known in ("database[.<environment>]", "rds_instance_class[.<environment>]", "vpc_id[.<environment>]",
                  "secrets_manager_endpoint[.<environment>]", "github_repository"):  # fmt: skip
        assert known in result.stderr


def test_production_requires_a_rehearsal_and_the_context_can_say_otherwise() -> None:
    testing, production = apply_context({})
    assert testing.rehearsal.required is False and production.rehearsal.required is True
    assert production.rehearsal.max_lock_seconds == 5 and production.rehearsal.max_duration_seconds == 600
    overrides = {"rehearsal_required.production": "false", "rehearsal_required.testing": "true"}
    testing, production = apply_context(overrides)
    assert testing.rehearsal.required is True and production.rehearsal.required is False
    with pytest.raises(ContextError, match=r"'rehearsal_required'='yes': allowed values are true, false"):
        apply_context({"rehearsal_required": "yes"})


@pytest.mark.parametrize("field", ["max_lock_seconds", "max_duration_seconds"])
def test_rehearsal_budgets_fit_in_one_run_of_the_migration_function(field: str) -> None:
    from stacks.settings import RehearsalSettings

    with pytest.raises(SettingsError, match=rf"rehearsal {field}=900: must be 0 to 840"):
        RehearsalSettings(**{field: 900})  # type: ignore[arg-type]
    with pytest.raises(SettingsError, match=rf"rehearsal {field}=-1: must be 0 to 840"):
        RehearsalSettings(**{field: -1})  # type: ignore[arg-type]
