"""Repeatable migrations (R__*.sql) in a deploy: a new or changed one changes the migration
resource's properties like a new migration does, and the deploy applies it after the numbered ones."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import Deployment

USERS = {"001_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, name text);\n"}
VIEW = "CREATE OR REPLACE VIEW user_names AS SELECT {columns} FROM users;\n"


def view_columns(deployment: Deployment) -> int:
    rows = deployment.database.query(
        "SELECT count(*) FROM information_schema.columns WHERE table_name = 'user_names'"
    )
    return int(rows[0][0])


def test_a_deploy_applies_new_and_changed_repeatables(
    deployment: Deployment, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment.write({**USERS, "R__user_names.sql": VIEW.format(columns="name")})
    old = deployment.properties()
    created = deployment.create()
    assert created.data["AppliedThisDeploy"] == "001_users" and view_columns(deployment) == 1
    assert "🔁 Applying repeatable: R__user_names" in capsys.readouterr().out

    deployment.write({"R__user_names.sql": VIEW.format(columns="name, id")})
    new = deployment.properties()
    assert new != old  # CloudFormation calls the resource: a changed repeatable is a change

    deployment.update(old)
    assert view_columns(deployment) == 2
    assert deployment.database.query("SELECT name FROM schema_repeatables") == [("R__user_names",)]
    assert deployment.applied_versions() == ["001_users"]
