"""The first deploy of an environment restored from a snapshot of the old setup's database, through
the deploy function against a real PostgreSQL: the old runner's ``schema_migrations`` is adopted
(the stack's ``baseline_version`` then ignored), or, with no tracking at all, the migrations up to
``baseline_version`` are recorded as baselined and only the later ones run; the data stays."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from tests.deploy.conftest import MIGRATION_LOGIN, Deployment

PROJECT_MIGRATIONS = Path(__file__).resolve().parents[2] / "database" / "migrations"
SHIPPED = {path.name: path.read_text() for path in sorted(PROJECT_MIGRATIONS.glob("0*.sql"))}
OLD = ("001_initial_schema", "002_add_user_profile", "003_add_savings_groups")  # what the old database has
ORDERS = {
    "004_add_orders.sql": """
        CREATE TABLE IF NOT EXISTS orders (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id UUID NOT NULL REFERENCES users(id),
            total DECIMAL(12, 2) NOT NULL,
            created_at TIMESTAMP WITH TIME ZONE DEFAULT CURRENT_TIMESTAMP
        );
    """,
}
REFUNDS = {"005_add_refunds.sql": "ALTER TABLE orders ADD COLUMN IF NOT EXISTS refunded boolean DEFAULT false;\n"}
DATA = """
INSERT INTO users (username, email, first_name, phone) VALUES
    ('ada', 'ada@example.com', 'Ada', '+44 20 7946 0000'), ('linus', 'linus@example.com', 'Linus', NULL);
INSERT INTO savings_groups (name, target_amount, current_amount, created_by)
    SELECT 'holiday', 1500.00, 420.50, id FROM users WHERE username = 'ada';
"""
# The old run-migrations.sh's tracking table: the version, and when.
OLD_RUNNERS_TABLE = (
    "CREATE TABLE schema_migrations (version VARCHAR(255) PRIMARY KEY, applied_at TIMESTAMP DEFAULT NOW())"
)


def the_old_database(deployment: Deployment, versions: tuple[str, ...], *, old_runner: bool) -> None:
    """The database the old setup made, as its master user: the schema of ``versions`` applied by hand
    or by the old run-migrations.sh (``old_runner``: its version-only table, a row per file), and data."""
    with psycopg.connect(deployment.database.admin_conninfo, autocommit=True) as connection:
        connection.execute(f"SET ROLE {MIGRATION_LOGIN}".encode())
        for version in versions:
            connection.execute(SHIPPED[f"{version}.sql"].encode())
        if "003_add_savings_groups" in versions:
            connection.execute(DATA.encode())
        else:
            connection.execute(DATA.split("INSERT INTO savings_groups")[0].encode())
        if old_runner:
            connection.execute(OLD_RUNNERS_TABLE.encode())
            for version in versions:
                connection.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))


def tracking(deployment: Deployment) -> dict[str, tuple[str | None, int | None]]:
    rows = deployment.database.query("SELECT version, applied_by, execution_ms FROM schema_migrations")
    return {str(version): (applied_by, execution_ms) for version, applied_by, execution_ms in rows}


def data_is_intact(deployment: Deployment) -> None:
    users = deployment.database.query("SELECT username, email, phone FROM users ORDER BY username")
    assert users == [("ada", "ada@example.com", "+44 20 7946 0000"), ("linus", "linus@example.com", None)]


def test_no_tracking_the_first_deploy_baselines_then_applies_only_the_later_migrations(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    the_old_database(deployment, OLD, old_runner=False)
    monkeypatch.setenv("BASELINE_VERSION", "003_add_savings_groups")  # baseline_version.testing, from the stack
    deployment.write({**SHIPPED, **ORDERS})

    result = deployment.create()

    assert result.status == "SUCCESS", result.error
    assert result.data["AppliedThisDeploy"] == "004_add_orders" and result.data["SchemaVersion"] == "004_add_orders"
    assert tracking(deployment) == {
        **{version: ("baseline:deploy:testing", None) for version in OLD},  # recorded, never run
        "004_add_orders": ("deploy:testing", tracking(deployment)["004_add_orders"][1]),
    }
    assert tracking(deployment)["004_add_orders"][1] is not None
    data_is_intact(deployment)
    assert deployment.database.query("SELECT name, current_amount FROM savings_groups") == [("holiday", 420.50)]
    assert deployment.database.query("SELECT to_regclass('orders')::text") == [("orders",)]
    output = capsys.readouterr().out
    assert "📌 Baselined 001_initial_schema, 002_add_user_profile, 003_add_savings_groups (BASELINE_VERSION=" in output
    assert "📌 Baselined (recorded as applied, not run): 001_initial_schema,002_add_user_profile," in output
    assert "📝 Applying: 004_add_orders" in output and "Applying: 001_initial_schema" not in output

    status = deployment.send({"action": "status"})  # what run-migrations.sh --status --environment shows
    assert status["ok"] is True, status
    applied = {item["version"]: item["baselined"] for item in status["status"]["applied"]}
    assert applied == {**dict.fromkeys(OLD, True), "004_add_orders": False}
    assert status["status"]["pending"] == [] and status["status"]["schema_drift"] == []

    # Every later deploy: the database records its migrations, the setting is ignored (and says so).
    old = deployment.properties()
    deployment.write(REFUNDS)
    later = deployment.update(old)

    assert later.status == "SUCCESS", later.error and later.data["AppliedThisDeploy"] == "005_add_refunds"
    output = capsys.readouterr().out
    assert "📌 BASELINE_VERSION=003_add_savings_groups ignored: the database already records its migrations" in output
    assert "📌 Baselined" not in output
    data_is_intact(deployment)


@pytest.mark.parametrize("baseline_version", [None, "002_add_user_profile"])
def test_the_old_runners_table_is_adopted_and_a_baseline_setting_ignored(
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    baseline_version: str | None,
) -> None:
    the_old_database(deployment, OLD[:2], old_runner=True)  # 001 and 002 ran under the old runner
    if baseline_version is not None:
        monkeypatch.setenv("BASELINE_VERSION", baseline_version)
    deployment.write({**SHIPPED, **ORDERS})

    result = deployment.create()

    assert result.status == "SUCCESS", result.error
    assert result.data["AppliedThisDeploy"] == "003_add_savings_groups,004_add_orders"
    rows = tracking(deployment)
    for version in OLD[:2]:  # the old runner's rows, adopted as they are: applied, not baselined, not run now
        applied_by, execution_ms = rows[version]
        assert execution_ms is None and not str(applied_by).startswith(("baseline:", "deploy:"))
    assert rows["003_add_savings_groups"][0] == rows["004_add_orders"][0] == "deploy:testing"
    assert deployment.database.query(
        "SELECT count(*) FROM schema_migrations WHERE checksum IS NULL OR applied_at IS NULL"
    ) == [(0,)]  # adopted: the old rows got their checksums, the old applied_at column kept its times
    data_is_intact(deployment)
    output = capsys.readouterr().out
    assert "✅ Migration table ready (adopted the previous runner's table)" in output
    assert "📌 Baselined" not in output
    ignored = f"📌 BASELINE_VERSION={baseline_version} ignored: the database already records its migrations"
    assert (ignored in output) is (baseline_version is not None)
