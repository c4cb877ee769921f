"""scripts/rehearse.sh ENVIRONMENT: a copy-on-write clone of the environment's cluster (RDS is moto),
the checkout's migrations rehearsed on it by the environment's migration function (the deploy
function and its runner, behind the Lambda stand-in), the clone deleted on success, failure and
Ctrl-C; --cleanup; the refusal for rds-free; the deploy that stops before anything changes.

The clone is a real PostgreSQL 17.9 of its own (TLS, the migration login with the cluster's
password, the cluster's data): the runner reaches it by the clone's endpoint name, which the test
certificate covers (support.RDS_DOMAIN) and libpq's PGHOSTADDR resolves to 127.0.0.1, as DNS would
in the VPC. The environment's own database is the deploy tests' server, and stays untouched.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from schema_migrations import deploy

from database.migrator.events import ignore_events
from database.migrator.orchestration import RunnerSettings, apply
from database.migrator.postgres import ConnectSettings
from stacks.cli import cdk_commands
from stacks.cli import rehearse as rehearse_cli
from stacks.rehearsal import clone as clone_module
from stacks.rehearsal.clone import REHEARSAL_TAG
from stacks.settings import ENVIRONMENTS, RehearsalSettings
from tests.deploy.conftest import MIGRATION_LOGIN, PASSWORD, REGION, STACK_NAME, TLS_DIR, Deployment, empty_clone
from tests.deploy.support import RDS_DOMAIN, FakeContext

DEPLOY_FUNCTION = "pg-schema-deploy-testing-migrate"
CLUSTER = "pg-schema-deploy-testing"
DEPLOYED = {
    "001_create_users.sql": "CREATE TABLE users (id serial PRIMARY KEY, email varchar(100) NOT NULL);\n",
    "002_add_name.sql": "ALTER TABLE users ADD COLUMN name text;\n",
}
WIDEN = {"003_widen_id.sql": "ALTER TABLE users ALTER COLUMN id TYPE bigint;\n"}  # rewrites users and its key
FAILING = {
    "003_add_check.sql": "-- one row has no @\nALTER TABLE users ADD CONSTRAINT has_at CHECK (email LIKE '%@%');\n"
}
ROWS = 50_000  # the rewrite holds its lock long enough to be sampled many times (every 5 ms)


@pytest.fixture
def environment(
    deployment: Deployment, clone_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, Any]]:
    """testing deployed with DEPLOYED and ROWS users; its cluster in RDS; a clone's server holding
    the same; the checkout (rehearse.sh's migrations folder) in tmp_path."""
    import moto.rds.models

    monkeypatch.setattr(
        moto.rds.models.DBCluster, "endpoint", property(lambda self: f"{self.db_cluster_identifier}.{RDS_DOMAIN}")
    )
    monkeypatch.setattr(clone_module, "POLL_SECONDS", 0.01)
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("PGHOSTADDR", "127.0.0.1")  # the VPC's DNS: every endpoint name leads to this machine
    monkeypatch.setenv("DATABASE_HOST", f"{CLUSTER}.{RDS_DOMAIN}")  # what the stack tells the functions
    deployment.write(DEPLOYED)
    deployment.create()
    fill(deployment.database.admin_conninfo)
    clone_database = prepare_clone(clone_server, deployment)

    rds = boto3.client("rds", region_name=REGION)
    ec2 = boto3.client("ec2", region_name=REGION)
    vpc = ec2.create_vpc(CidrBlock="10.41.0.0/16")["Vpc"]["VpcId"]
    subnets = [
        ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.41.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")["Subnet"]
        for i, zone in enumerate("ab")
    ]
    subnet_ids = [subnet["SubnetId"] for subnet in subnets]
    rds.create_db_subnet_group(DBSubnetGroupName="isolated", DBSubnetGroupDescription="db", SubnetIds=subnet_ids)
    group = ec2.create_security_group(GroupName="db", Description="db", VpcId=vpc)["GroupId"]
    rds.create_db_cluster(
        DBClusterIdentifier=CLUSTER, Engine="aurora-postgresql", EngineVersion="17.9", MasterUsername=MIGRATION_LOGIN,
        ManageMasterUserPassword=True, DBSubnetGroupName="isolated", VpcSecurityGroupIds=[group],
        DatabaseName=deployment.database.dbname, Port=clone_server.port,
        ServerlessV2ScalingConfiguration={"MinCapacity": 0, "MaxCapacity": 2},
    )  # fmt: skip
    rds.describe_db_clusters(DBClusterIdentifier=CLUSTER)  # moto: creating, then available

    def deploy_function(payload: dict[str, Any]) -> tuple[Any, bool]:
        return deploy.handler(payload, FakeContext(180, DEPLOY_FUNCTION)), False

    deployment.aws.functions[DEPLOY_FUNCTION] = deploy_function
    deployment.aws.stack_outputs[STACK_NAME] = {
        "MigrationFunctionName": DEPLOY_FUNCTION,
        "DatabaseFlavour": "aurora-serverless",
        "DatabaseIdentifier": CLUSTER,
    }
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    for name, sql in DEPLOYED.items():
        (checkout / name).write_text(sql)
    monkeypatch.setattr(rehearse_cli, "MIGRATIONS_DIR", checkout)
    yield {
        "rds": rds,
        "checkout": checkout,
        "clone": clone_database,
        "new_clone": lambda: prepare_clone(clone_server, deployment),  # a later clone: as the cluster is now
        "server": clone_server,
    }


def fill(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO users (email, name) SELECT 'user' || i || '@example.com', 'User ' || i "
            f"FROM generate_series(1, {ROWS}) AS i"
        )
        connection.execute("INSERT INTO users (email) VALUES ('no-at-sign')")
        connection.execute("ANALYZE users")


def prepare_clone(server: Any, deployment: Deployment) -> str:
    """What a copy-on-write clone of the cluster holds: its database with the same migrations and
    rows, owned by the migration login with the cluster's password."""
    name = deployment.database.dbname
    conninfo = empty_clone(server, name)
    login = make_conninfo(
        "", host="127.0.0.1", port=server.port, dbname=name, user=MIGRATION_LOGIN, password=PASSWORD,
        sslmode="verify-full", sslrootcert=str(TLS_DIR / "ca.crt"),
    )  # fmt: skip
    settings = RunnerSettings(
        migrations_dir=deployment.migrations,
        connect=ConnectSettings(conninfo=login, total_timeout_seconds=10),
        applied_by="deploy:testing",
    )
    apply(settings, ignore_events)
    fill(conninfo)
    return conninfo


def clusters(rds: Any) -> list[str]:
    return sorted(cluster["DBClusterIdentifier"] for cluster in rds.describe_db_clusters()["DBClusters"])


def rehearse(*arguments: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = rehearse_cli.main(["testing", *arguments])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def columns(conninfo: str) -> dict[str, str]:
    with psycopg.connect(conninfo) as connection:
        rows = connection.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'users'"
        ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def test_a_rehearsal_measures_the_pending_migration_on_a_clone_and_deletes_it(
    environment: dict[str, Any], deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    (environment["checkout"] / "003_widen_id.sql").write_text(WIDEN["003_widen_id.sql"])

    code, out, err = rehearse("--json", "--max-lock", "60", capsys=capsys)

    assert code == 0, (out, err)
    document = json.loads(out[out.rindex("\n{\n") + 1 :])  # after the functions' own log (same process here)
    assert document["ok"] is True and document["clone"].startswith(f"{CLUSTER}-rehearsal-")
    [measure] = document["rehearsal"]["migrations"]
    assert measure["version"] == "003_widen_id"
    assert measure["rewritten"] == ["public.users"]
    assert {"table": "public.users", "mode": "AccessExclusiveLock"} in [
        {"table": lock["table"], "mode": lock["mode"]} for lock in measure["locks"]
    ]
    assert measure["over_budget"] == []
    # Visible progress while the clone was made, and it was deleted afterwards.
    assert f"🧬 Cloning {CLUSTER}" in err and "✅ Clone" in err and "🧹 Deleting clone" in err
    assert clusters(environment["rds"]) == [CLUSTER]
    # The clone got the migration; the environment's database did not.
    assert columns(environment["clone"])["id"] == "bigint"
    assert columns(deployment.database.admin_conninfo)["id"] == "integer"
    assert deployment.applied_versions() == ["001_create_users", "002_add_name"]
    [(_, restore)] = [call for call in deployment.aws.invocations if call[1].get("action") == "rehearse"][:1]
    assert restore["clone_host"] == f"{document['clone']}.{RDS_DOMAIN}"


def test_over_the_lock_budget_the_rehearsal_exits_1_and_the_clone_is_deleted(
    environment: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    (environment["checkout"] / "003_widen_id.sql").write_text(WIDEN["003_widen_id.sql"])

    code, out, _ = rehearse("--max-lock", "0", capsys=capsys)

    assert code == 1
    assert "❌ over budget: ACCESS EXCLUSIVE lock on public.users held" in out
    assert "❌ Rehearsal over budget" in out
    assert clusters(environment["rds"]) == [CLUSTER]


def test_a_failing_migration_is_reported_with_file_line_and_sqlstate(
    environment: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    (environment["checkout"] / "003_add_check.sql").write_text(FAILING["003_add_check.sql"])

    code, out, _ = rehearse(capsys=capsys)

    assert code == 1
    assert "❌ Rehearsal failed: database/migrations/003_add_check.sql:2" in out
    assert "23514" in out
    assert clusters(environment["rds"]) == [CLUSTER]


def test_ctrl_c_while_rehearsing_still_deletes_the_clone(
    environment: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (environment["checkout"] / "003_widen_id.sql").write_text(WIDEN["003_widen_id.sql"])
    from database.cli.deployed import DeployedTarget

    invoke = DeployedTarget.invoke

    def interrupted(self: DeployedTarget, payload: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        if payload.get("action") == "rehearse":
            raise KeyboardInterrupt
        return invoke(self, payload, *args, **kwargs)

    monkeypatch.setattr(DeployedTarget, "invoke", interrupted)

    code, _, err = rehearse(capsys=capsys)

    assert code == 130
    assert "🧹 Deleting clone" in err
    assert clusters(environment["rds"]) == [CLUSTER]


def test_nothing_to_rehearse_when_the_checkout_is_what_is_deployed(
    environment: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = rehearse(capsys=capsys)

    assert code == 0
    assert "nothing to rehearse" in out
    assert "Cloning" not in err
    assert clusters(environment["rds"]) == [CLUSTER]


def test_cleanup_deletes_only_this_environments_tagged_clones(
    environment: dict[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    rds = environment["rds"]
    for name, tags in (
        (f"{CLUSTER}-rehearsal-20261204010101", [{"Key": REHEARSAL_TAG, "Value": "testing"}]),
        ("pg-schema-deploy-production-rehearsal-20261204010101", [{"Key": REHEARSAL_TAG, "Value": "production"}]),
        (f"{CLUSTER}-copy", []),
    ):
        rds.restore_db_cluster_to_point_in_time(
            DBClusterIdentifier=name, SourceDBClusterIdentifier=CLUSTER, RestoreType="copy-on-write",
            UseLatestRestorableTime=True, DBSubnetGroupName="isolated", Tags=tags,
        )  # fmt: skip
        rds.create_db_instance(DBInstanceIdentifier=f"{name}-1", DBClusterIdentifier=name,
                               DBInstanceClass="db.serverless", Engine="aurora-postgresql")  # fmt: skip

    code, _, err = rehearse("--cleanup", capsys=capsys)

    assert code == 0
    assert f"🧹 Deleting clone {CLUSTER}-rehearsal-20261204010101" in err
    assert clusters(rds) == sorted(
        [CLUSTER, f"{CLUSTER}-copy", "pg-schema-deploy-production-rehearsal-20261204010101"]
    )


def test_rds_free_is_refused_with_what_to_do_instead(
    environment: dict[str, Any], deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.aws.stack_outputs[STACK_NAME]["DatabaseFlavour"] = "rds-free"
    (environment["checkout"] / "003_widen_id.sql").write_text(WIDEN["003_widen_id.sql"])

    code, _, err = rehearse(capsys=capsys)

    assert code == 2
    assert "no copy-on-write clone" in err and "--environment local --rehearse" in err
    assert clusters(environment["rds"]) == [CLUSTER]


def test_the_function_refuses_to_rehearse_on_the_database_itself(
    environment: dict[str, Any], deployment: Deployment
) -> None:
    request = {
        "action": "rehearse",
        "clone_host": f"{CLUSTER}.{RDS_DOMAIN}",
        "migrations": WIDEN,
        "lint_report": {"files": []},
        "budgets": {"max_lock_seconds": 5, "max_duration_seconds": 600},
    }

    answer = deploy.handler(request, FakeContext(60, DEPLOY_FUNCTION))

    assert answer["ok"] is False and answer["kind"] == "RequestError"
    assert "is not a rehearsal clone of pg-schema-deploy-testing" in answer["error"]
    assert deployment.applied_versions() == ["001_create_users", "002_add_name"]


def test_a_deploy_that_requires_a_rehearsal_stops_before_anything_changes(
    environment: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (environment["checkout"] / "003_widen_id.sql").write_text(WIDEN["003_widen_id.sql"])
    summary = tmp_path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    settings = replace(ENVIRONMENTS["testing"], rehearsal=RehearsalSettings(required=True, max_lock_seconds=0))

    with pytest.raises(cdk_commands.CommandError, match="nothing was deployed"):
        cdk_commands.rehearse_first(settings)

    assert "| 003_widen_id |" in summary.read_text() and "over budget" in summary.read_text()
    assert clusters(environment["rds"]) == [CLUSTER]
    capsys.readouterr()
    environment["new_clone"]()
    within = replace(settings, rehearsal=RehearsalSettings(required=True, max_lock_seconds=60))
    cdk_commands.rehearse_first(within)  # within budget: the deploy goes on
    assert "✅ Rehearsal within budgets: 1 migration(s)" in capsys.readouterr().out


class SlowRds:
    """Moto's RDS, except that the clone's instance takes three polls to become available (moto's
    is available at once) and the calls that make the clone are recorded."""

    def __init__(self, rds: Any) -> None:
        self.rds = rds
        self.polls = 0
        self.restored: dict[str, Any] = {}

    def restore_db_cluster_to_point_in_time(self, **arguments: Any) -> Any:
        self.restored = arguments
        return self.rds.restore_db_cluster_to_point_in_time(**arguments)

    def describe_db_instances(self, **arguments: Any) -> Any:
        answer = self.rds.describe_db_instances(**arguments)
        self.polls += 1
        if self.polls <= 3:
            for instance in answer["DBInstances"]:
                instance["DBInstanceStatus"] = "creating" if self.polls < 3 else "configuring-enhanced-monitoring"
        return answer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.rds, name)


def test_the_clone_is_made_like_the_cluster_and_waited_for_with_progress(environment: dict[str, Any]) -> None:
    rds = SlowRds(environment["rds"])
    out = io.StringIO()
    slept: list[float] = []
    cloner = clone_module.ClusterCloner(rds, "testing", CLUSTER, out, poll_seconds=15, sleep=slept.append)

    with cloner.clone() as clone:
        assert clusters(environment["rds"]) == sorted([CLUSTER, clone.cluster])
        [made] = environment["rds"].describe_db_clusters(DBClusterIdentifier=clone.cluster)["DBClusters"]

    source = environment["rds"].describe_db_clusters(DBClusterIdentifier=CLUSTER)["DBClusters"][0]
    assert rds.restored["RestoreType"] == "copy-on-write" and rds.restored["UseLatestRestorableTime"] is True
    assert rds.restored["DBSubnetGroupName"] == source["DBSubnetGroup"] == made["DBSubnetGroup"]
    assert rds.restored["VpcSecurityGroupIds"] == [g["VpcSecurityGroupId"] for g in source["VpcSecurityGroups"]]
    assert rds.restored["ServerlessV2ScalingConfiguration"] == {"MinCapacity": 0.5, "MaxCapacity": 2.0}  # never paused
    assert {"Key": REHEARSAL_TAG, "Value": "testing"} in made["TagList"]
    assert clone.endpoint == f"{clone.cluster}.{RDS_DOMAIN}" and len(clone.instance) <= 63
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines if line.startswith("⏳")] == [
        f"⏳ Clone {clone.cluster}: cluster available, instance creating",
        f"⏳ Clone {clone.cluster}: cluster available, instance configuring-enhanced-monitoring",
    ]
    assert slept == [15, 15, 15]
    assert lines[-1].startswith(f"🧹 Deleting clone {clone.cluster}")
    assert clusters(environment["rds"]) == [CLUSTER]


def test_a_restored_environment_is_rehearsed_as_its_first_deploy_would_run(
    environment: dict[str, Any], deployment: Deployment, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    """A cluster restored from the old setup's snapshot, not deployed with migrations yet: its tables
    exist without tracking, and BASELINE_VERSION (the stack's setting) baselines them first."""
    conninfo = empty_clone(environment["server"], deployment.database.dbname)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute("CREATE TABLE users (id serial PRIMARY KEY, email varchar(100) NOT NULL, name text)")
        connection.execute(f"ALTER TABLE users OWNER TO {MIGRATION_LOGIN}".encode())
        connection.execute(f"ALTER SEQUENCE users_id_seq OWNER TO {MIGRATION_LOGIN}".encode())
    fill(conninfo)
    monkeypatch.setenv("BASELINE_VERSION", "002_add_name")
    (environment["checkout"] / "003_widen_id.sql").write_text(WIDEN["003_widen_id.sql"])

    code, out, err = rehearse("--json", "--max-lock", "60", capsys=capsys)

    assert code == 0, (out, err)
    document = json.loads(out[out.rindex("\n{\n") + 1 :])
    assert [measure["version"] for measure in document["rehearsal"]["migrations"]] == ["003_widen_id"]
    with psycopg.connect(conninfo) as connection:
        rows = connection.execute("SELECT version, applied_by FROM schema_migrations ORDER BY version").fetchall()
    assert rows == [("001_create_users", "baseline:rehearsal:testing"), ("002_add_name", "baseline:rehearsal:testing"),
                    ("003_widen_id", "rehearsal:testing")]  # fmt: skip
    assert clusters(environment["rds"]) == [CLUSTER]


def test_an_environment_not_deployed_is_named_in_one_line(
    environment: dict[str, Any], deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    del deployment.aws.stack_outputs[STACK_NAME]

    code, _, err = rehearse(capsys=capsys)

    assert code == 3
    assert err.strip() == (
        f"rehearse: testing: stack {STACK_NAME} does not exist in {REGION} for these credentials; deploy it first "
        "(scripts/deploy.sh testing) or set AWS_REGION to where it is"
    )
    settings = replace(ENVIRONMENTS["testing"], rehearsal=RehearsalSettings(required=True))
    cdk_commands.rehearse_first(settings)  # a first deploy: nothing to rehearse on, the deploy goes on
    assert f"rehearse: {STACK_NAME} is not deployed yet: nothing to rehearse on" in capsys.readouterr().out
    assert clusters(environment["rds"]) == [CLUSTER]
