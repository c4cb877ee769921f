"""Schema drift through the deploy-time functions: a deploy records the schema it left, the CLI's
status (through the deploy function) names what was changed by hand, the next deploy reports it
in its output and, where the environment says so, fails on it before applying anything."""

from __future__ import annotations

import io
from typing import Any

import psycopg
import pytest

from database.cli.__main__ import status_exit_code
from database.cli.render import HumanRenderer
from database.migrator.report import status_from_dict
from tests.deploy.conftest import Deployment
from tests.deploy.support import failed

FIRST = {"001_create_users.sql": "CREATE TABLE users (id serial PRIMARY KEY, phone varchar(20));\n"}
SECOND = {"002_add_email.sql": "ALTER TABLE users ADD COLUMN email text;\n"}
BY_HAND = ("ALTER TABLE users ALTER COLUMN phone TYPE text", "CREATE INDEX idx_users_phone_tmp ON users (phone)")
NAMED = [
    "column public.users.phone: type text, was character varying(20)",
    "index public.idx_users_phone_tmp added",
]


def change_by_hand(deployment: Deployment) -> None:
    """What someone does at 2 a.m., as the database's administrator."""
    with psycopg.connect(deployment.database.admin_conninfo, autocommit=True) as connection:
        for statement in BY_HAND:
            connection.execute(statement)


def status_of(deployment: Deployment) -> dict[str, Any]:
    answer = deployment.send({"action": "status"})
    assert answer["ok"] is True, answer
    document: dict[str, Any] = answer["status"]
    return document


def test_a_deploy_leaves_no_drift_and_status_names_changes_made_by_hand(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.create()
    assert status_of(deployment)["schema_drift"] == []

    change_by_hand(deployment)

    document = status_of(deployment)
    assert document["schema_drift"] == NAMED and document["schema_recorded_at"]
    status = status_from_dict(document)  # as the CLI reads it
    assert status.schema_drift == NAMED and status_exit_code(status, frozenset()) == 1


def deployed_then_changed_by_hand(deployment: Deployment) -> dict[str, Any]:
    """FIRST deployed, the schema changed by hand, SECOND added; the properties of the first deploy."""
    deployment.write(FIRST)
    old = deployment.properties()
    deployment.create()
    change_by_hand(deployment)
    deployment.write(SECOND)
    return old


def test_the_next_deploy_reports_drift_then_records_the_result(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    old = deployed_then_changed_by_hand(deployment)

    result = deployment.update(old)

    assert result.data["AppliedThisDeploy"] == "002_add_email"
    output = capsys.readouterr().out
    assert "⚠️  The schema had changed outside migrations since the last apply (drift)" in output
    assert "  • index public.idx_users_phone_tmp added" in output
    assert status_of(deployment)["schema_drift"] == []


def test_an_environment_that_fails_on_drift_applies_nothing(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch
) -> None:
    old = deployed_then_changed_by_hand(deployment)
    monkeypatch.setenv("SCHEMA_DRIFT", "fail")

    message = failed(deployment.update(old))
    assert "the schema changed outside migrations since the last apply" in message
    assert "column public.users.phone: type text, was character varying(20)" in message
    assert "Nothing was applied" in message
    assert deployment.applied_versions() == ["001_create_users"]
    assert status_of(deployment)["schema_drift"] == NAMED  # still there: nothing recorded over it


def test_an_unknown_drift_setting_is_refused(deployment: Deployment, monkeypatch: pytest.MonkeyPatch) -> None:
    deployment.write(FIRST)
    monkeypatch.setenv("SCHEMA_DRIFT", "ignore")

    assert "SCHEMA_DRIFT='ignore': expected one of report, fail" in failed(deployment.create())


def test_the_cli_shows_a_deployed_drift_like_a_local_one(deployment: Deployment) -> None:
    deployment.write(FIRST)
    deployment.create()
    change_by_hand(deployment)
    out = io.StringIO()

    HumanRenderer(out, out, quiet=False).status(status_from_dict(status_of(deployment)))

    assert "❌ Schema changed outside migrations since the last apply (drift):" in out.getvalue()
    assert "  • column public.users.phone: type text, was character varying(20)" in out.getvalue()
