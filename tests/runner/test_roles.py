"""database/migrator/roles.py on the local server (as its superuser, like --environment local): what
it leaves out, and what it refuses. The deploy-side behaviour is in tests/deploy/test_roles.py."""

from __future__ import annotations

import psycopg
import pytest

from database.migrator import roles
from database.migrator.roles import AccessRoles, RolesError, ensure_roles, planned_changes

DEFAULT = AccessRoles("webapp_app", "webapp_readonly")


@pytest.mark.parametrize(
    ("application", "readonly", "message"),
    [
        ("web app", "reports", r"'web app' is not a role name"),
        ("app", "pg_monitor", r"'pg_monitor' is not a role name"),
        ("app", "rds_iam", r"'rds_iam' is not a role name"),
        ("same", "same", r"both 'same'"),
    ],
)
def test_names_are_checked_before_any_sql(application: str, readonly: str, message: str) -> None:
    with pytest.raises(RolesError, match=message):
        AccessRoles(application, readonly)


def test_extension_objects_and_the_tracking_table_are_left_alone(database_uri: str) -> None:
    with psycopg.connect(database_uri, autocommit=True) as connection:
        connection.execute('CREATE EXTENSION "uuid-ossp"')
        connection.execute("CREATE TABLE schema_migrations (version text PRIMARY KEY)")
        connection.execute("CREATE TABLE notes (id uuid DEFAULT uuid_generate_v4() PRIMARY KEY)")
        statements = ensure_roles(connection, DEFAULT)

        assert "GRANT DELETE, INSERT, SELECT, UPDATE ON TABLE notes TO webapp_app" in statements
        assert not [s for s in statements if "uuid_" in s or "schema_migrations" in s]
        assert planned_changes(connection, DEFAULT) == []
        with psycopg.connect(database_uri.replace("postgres@", "webapp_app@"), autocommit=True) as app:
            app.execute("INSERT INTO notes DEFAULT VALUES")  # the extension's function: PUBLIC may run it


def test_without_the_iam_role_nothing_is_done_and_the_way_out_is_named(
    database_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(roles, "IAM_ROLE", "rds_iam_elsewhere")
    with psycopg.connect(database_uri, autocommit=True) as connection:
        with pytest.raises(RolesError, match="the role rds_iam_elsewhere does not exist in this cluster: RDS creates"):
            ensure_roles(connection, AccessRoles("nobody_app", "nobody_reports"))
        assert connection.execute("SELECT to_regrole('nobody_app')").fetchone() == (None,)
