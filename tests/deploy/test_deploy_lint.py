"""The lint gate inside the deploy: squawk's findings ship in the asset (lint-report.json), the
function judges the pending ones with the live table sizes, and a deploy stops before anything is
written while an unacknowledged error stands. The CLI's --lint --environment reads the same."""

from __future__ import annotations

import json

import psycopg
import pytest

from tests.deploy.conftest import Deployment
from tests.deploy.support import failed
from tests.deploy.test_cli_deployed_status import laptop, run_cli  # noqa: F401 (laptop: a fixture)

ORDERS = {"001_orders.sql": "CREATE TABLE orders (id bigint PRIMARY KEY, x bigint);\n"}
INDEX = {"002_orders_x.sql": "-- look orders up by x\nCREATE INDEX orders_x ON orders (x);\n"}


def deployed_with_rows(deployment: Deployment, rows: int) -> dict[str, object]:
    """ORDERS deployed and filled (as an administrator), INDEX written; the first deploy's properties."""
    deployment.write(ORDERS)
    old = deployment.properties()
    deployment.create()
    with psycopg.connect(deployment.database.admin_conninfo, autocommit=True) as connection:
        connection.execute(f"INSERT INTO orders SELECT g, g FROM generate_series(1, {rows}) AS g".encode())
        connection.execute("ANALYZE orders")
    deployment.write(INDEX)
    return old


def test_a_deploy_stops_on_a_big_table_with_nothing_applied(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = deployed_with_rows(deployment, 500)
    monkeypatch.setenv("LINT_ERROR_ROWS", "400")

    message = failed(deployment.update(old))

    assert "lint: 1 unacknowledged error in the pending migrations; nothing was applied" in message
    assert "database/migrations/002_orders_x.sql:2 require-concurrent-index-creation" in message
    assert "CREATE INDEX on public.orders (500 rows, " in message
    assert "-- squawk-ignore require-concurrent-index-creation" in message
    assert deployment.applied_versions() == ["001_orders"]
    assert deployment.database.query("SELECT to_regclass('orders_x')") == [(None,)]


def test_the_same_deploy_passes_with_a_warning_below_the_threshold(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    old = deployed_with_rows(deployment, 500)  # LINT_ERROR_ROWS: the default, 100,000

    result = deployment.update(old)

    assert result.data["AppliedThisDeploy"] == "002_orders_x"
    output = capsys.readouterr().out
    assert "lint warning: database/migrations/002_orders_x.sql:2 require-concurrent-index-creation" in output
    assert "(a warning below 100,000 rows)" in output


def test_an_acknowledged_finding_does_not_stop_the_deploy(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = deployed_with_rows(deployment, 500)
    deployment.write({"002_orders_x.sql": "-- squawk-ignore require-concurrent-index-creation\n"
                                          "CREATE INDEX orders_x ON orders (x);\n"})
    monkeypatch.setenv("LINT_ERROR_ROWS", "400")

    assert deployment.update(old).data["AppliedThisDeploy"] == "002_orders_x"


def test_a_report_that_does_not_match_the_files_stops_the_deploy(deployment: Deployment) -> None:
    old = deployed_with_rows(deployment, 5)
    (deployment.migrations / "002_orders_x.sql").write_text("CREATE INDEX orders_y ON orders (x);\n")  # no new report

    message = failed(deployment.update(old))

    assert "lint-report.json has no findings for 002_orders_x as this asset carries it" in message
    assert deployment.applied_versions() == ["001_orders"]


def test_lint_of_a_deployed_environment_from_a_laptop(
    deployment: Deployment,
    laptop: dict[str, str],  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deployed_with_rows(deployment, 500)
    monkeypatch.setenv("LINT_ERROR_ROWS", "400")

    shown = run_cli(laptop, "--lint", "--environment", "testing")
    document = json.loads(run_cli(laptop, "--lint", "--json", "--environment", "testing").stdout)

    assert shown.returncode == 1, shown.stderr
    assert "database/migrations/002_orders_x.sql:2 require-concurrent-index-creation error" in shown.stdout
    assert "CREATE INDEX on public.orders (500 rows, " in shown.stdout
    assert document["ok"] is False and document["environment"] == "testing"
    [finding] = document["findings"]
    assert finding["table"] == "public.orders" and finding["estimated_rows"] == 500
    assert deployment.applied_versions() == ["001_orders"]  # lint applies nothing
