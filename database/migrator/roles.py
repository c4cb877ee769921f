"""The application's logins: one place for the role and grant SQL, used by the deploy and locally.

``ensure_roles`` makes sure, as the migration login (the objects' owner), that

- the application role exists: LOGIN, no password, a member of ``rds_iam`` (on RDS it then logs in
  only with an IAM token), no SUPERUSER, CREATEDB, CREATEROLE, REPLICATION or BYPASSRLS. It has
  CONNECT on the database, USAGE on the migrations' schemas, SELECT, INSERT, UPDATE, DELETE on their
  tables, USAGE, SELECT on their sequences and EXECUTE on their routines;
- the read-only role exists the same way, with CONNECT, USAGE on the schemas and SELECT on the tables;
- neither has any privilege on the runner's own tables (``schema_migrations`` and its fingerprint);
- default privileges (``ALTER DEFAULT PRIVILEGES FOR ROLE <migration login>``) give both the same
  on what later migrations create, so a migration never has to grant anything.

The migrations' schemas and objects are those the migration login may act as the owner of, outside
the system schemas and outside extensions (an extension's objects keep the extension's privileges).

One query computes what is missing; only that is executed, in one transaction. When nothing is
missing (every deploy after the first, unless a migration added something default privileges do not
cover) nothing at all is written. Grants it did not make are left alone, except on the runner's tables.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
import psycopg.sql

from .errors import MigrationError
from .postgres import TRACKING_TABLE
from .schema_state import FINGERPRINT_TABLE

IAM_ROLE = "rds_iam"  # RDS's role for IAM database authentication; a plain role locally

_ROLE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class RolesError(MigrationError):
    """The application's roles cannot be set up (a bad name, no rds_iam role, missing rights)."""


@dataclass(frozen=True)
class AccessRoles:
    """The names of the application's read/write role and of the read-only role."""

    application: str
    readonly: str

    def __post_init__(self) -> None:
        for role in (self.application, self.readonly):
            if not _ROLE_NAME.fullmatch(role) or role.startswith("pg_") or role == IAM_ROLE:
                raise RolesError(f"{role!r} is not a role name this project creates (lowercase, digits, _)")
        if self.application == self.readonly:
            raise RolesError(f"the application and read-only roles are both {self.application!r}")


# Every statement that would change something, in the order they must run. %(...)s are the role
# names and the runner's own tables; format('%I') quotes identifiers, regclass/regprocedure whole names.
_PLAN = """
WITH wanted(step, name, table_privileges, sequence_privileges, routine_privileges) AS (
    VALUES (1, %(application)s::name, ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE'], ARRAY['USAGE', 'SELECT'],
            ARRAY['EXECUTE']),
           (2, %(readonly)s::name, ARRAY['SELECT'], ARRAY[]::text[], ARRAY[]::text[])
),
grantee AS (
    SELECT w.*, r.oid AS role_oid, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolreplication,
           r.rolbypassrls
    FROM wanted w LEFT JOIN pg_roles r ON r.rolname = w.name
),
extension_member AS (
    SELECT classid, objid FROM pg_depend WHERE deptype = 'e'
),
managed_schema AS (
    SELECT n.oid, n.nspname, n.nspowner, n.nspacl FROM pg_namespace n
    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' AND pg_has_role(n.nspowner, 'USAGE')
      AND (('pg_namespace'::regclass::oid, n.oid) NOT IN (SELECT * FROM extension_member))
),
managed_relation AS (
    SELECT c.oid, c.relkind, c.relowner, c.relacl FROM pg_class c JOIN managed_schema n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND pg_has_role(c.relowner, 'USAGE')
      AND NOT EXISTS (SELECT FROM unnest(%(runner_tables)s::text[]) t WHERE to_regclass(t) = c.oid)
      AND (('pg_class'::regclass::oid, c.oid) NOT IN (SELECT * FROM extension_member))
),
missing_privilege(step, kind, object, grantee, privilege) AS (
    SELECT 3, 'DATABASE', format('%%I', d.datname), g.name, 'CONNECT'
    FROM pg_database d CROSS JOIN grantee g
    WHERE d.datname = current_database() AND NOT EXISTS (
        SELECT FROM aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
        WHERE a.grantee = g.role_oid AND a.privilege_type = 'CONNECT')
    UNION ALL
    SELECT 4, 'SCHEMA', format('%%I', n.nspname), g.name, 'USAGE'
    FROM managed_schema n CROSS JOIN grantee g
    WHERE NOT EXISTS (
        SELECT FROM aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
        WHERE a.grantee = g.role_oid AND a.privilege_type = 'USAGE')
    UNION ALL
    SELECT 5, CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, c.oid::regclass::text, g.name, p.privilege
    FROM managed_relation c CROSS JOIN grantee g
    CROSS JOIN LATERAL unnest(CASE WHEN c.relkind = 'S' THEN g.sequence_privileges ELSE g.table_privileges END)
        AS p(privilege)
    WHERE NOT EXISTS (
        SELECT FROM aclexplode(coalesce(c.relacl, acldefault(CASE WHEN c.relkind = 'S' THEN 's' ELSE 'r' END::"char",
                                                             c.relowner))) a
        WHERE a.grantee = g.role_oid AND a.privilege_type = p.privilege)
    UNION ALL
    SELECT 6, 'ROUTINE', f.oid::regprocedure::text, g.name, p.privilege
    FROM pg_proc f JOIN managed_schema n ON n.oid = f.pronamespace CROSS JOIN grantee g
    CROSS JOIN LATERAL unnest(g.routine_privileges) AS p(privilege)
    WHERE pg_has_role(f.proowner, 'USAGE')
      AND (('pg_proc'::regclass::oid, f.oid) NOT IN (SELECT * FROM extension_member))
      AND NOT EXISTS (
        SELECT FROM aclexplode(coalesce(f.proacl, acldefault('f', f.proowner))) a
        WHERE a.grantee = g.role_oid AND a.privilege_type = p.privilege)
),
default_privilege(objtype, kind, privileges_of) AS (
    VALUES ('n'::"char", 'SCHEMAS', 'schema'), ('r', 'TABLES', 'table'), ('S', 'SEQUENCES', 'sequence'),
           ('f', 'FUNCTIONS', 'routine')
),
missing_default(kind, grantee, privilege, position) AS (
    SELECT dp.kind, g.name, p.privilege, p.position
    FROM default_privilege dp CROSS JOIN grantee g
    CROSS JOIN LATERAL unnest(CASE dp.privileges_of WHEN 'schema' THEN ARRAY['USAGE']
                                                    WHEN 'table' THEN g.table_privileges
                                                    WHEN 'sequence' THEN g.sequence_privileges
                                                    ELSE g.routine_privileges END)
        WITH ORDINALITY AS p(privilege, position)
    WHERE NOT EXISTS (
        SELECT FROM pg_default_acl da CROSS JOIN LATERAL aclexplode(da.defaclacl) a
        WHERE da.defaclrole = (SELECT oid FROM pg_roles WHERE rolname = current_user)
          AND da.defaclnamespace = 0 AND da.defaclobjtype = dp.objtype
          AND a.grantee = g.role_oid AND a.privilege_type = p.privilege)
),
statement(step, sort_key, sql) AS (
    SELECT g.step, '', format('CREATE ROLE %%I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS',
                              g.name)
    FROM grantee g WHERE g.role_oid IS NULL
    UNION ALL
    SELECT g.step, '', format('ALTER ROLE %%I %%s', g.name, concat_ws(' ',
               CASE WHEN NOT g.rolcanlogin THEN 'LOGIN' END, CASE WHEN g.rolsuper THEN 'NOSUPERUSER' END,
               CASE WHEN g.rolcreatedb THEN 'NOCREATEDB' END, CASE WHEN g.rolcreaterole THEN 'NOCREATEROLE' END,
               CASE WHEN g.rolreplication THEN 'NOREPLICATION' END, CASE WHEN g.rolbypassrls THEN 'NOBYPASSRLS' END))
    FROM grantee g
    WHERE g.role_oid IS NOT NULL
      AND (NOT g.rolcanlogin OR g.rolsuper OR g.rolcreatedb OR g.rolcreaterole OR g.rolreplication OR g.rolbypassrls)
    UNION ALL
    SELECT g.step, 'iam', format('GRANT %%I TO %%I', %(iam)s::name, g.name)
    FROM grantee g
    WHERE NOT EXISTS (
        SELECT FROM pg_auth_members m JOIN pg_roles iam ON iam.oid = m.roleid
        WHERE iam.rolname = %(iam)s::name AND m.member = g.role_oid)
    UNION ALL
    SELECT min(m.step), m.object || m.grantee,
           format('GRANT %%s ON %%s %%s TO %%I', string_agg(m.privilege, ', ' ORDER BY m.privilege), m.kind,
                  m.object, m.grantee)
    FROM missing_privilege m GROUP BY m.kind, m.object, m.grantee
    UNION ALL
    SELECT 7, g.name, format('REVOKE ALL ON TABLE %%s FROM %%I', c.oid::regclass, g.name)
    FROM pg_class c CROSS JOIN grantee g
    WHERE EXISTS (SELECT FROM unnest(%(runner_tables)s::text[]) t WHERE to_regclass(t) = c.oid)
      AND EXISTS (SELECT FROM aclexplode(c.relacl) a WHERE a.grantee = g.role_oid)
    UNION ALL
    SELECT 8, m.kind || m.grantee,
           format('ALTER DEFAULT PRIVILEGES FOR ROLE %%I GRANT %%s ON %%s TO %%I',
                  current_user, string_agg(m.privilege, ', ' ORDER BY m.position), m.kind, m.grantee)
    FROM missing_default m GROUP BY m.kind, m.grantee
)
SELECT to_regrole(%(iam)s::text) IS NOT NULL, ARRAY(SELECT sql FROM statement ORDER BY step, sort_key, sql)
"""


def ensure_iam_stand_in(connection: psycopg.Connection[tuple[object, ...]]) -> None:
    """Locally there is no IAM authentication: a plain ``rds_iam`` role stands in for RDS's, so that
    the same grants work and an application's tests can log in as its role."""
    if connection.execute("SELECT to_regrole(%s)", (IAM_ROLE,)).fetchone() == (None,):
        connection.execute(psycopg.sql.SQL("CREATE ROLE {}").format(psycopg.sql.Identifier(IAM_ROLE)))


def planned_changes(connection: psycopg.Connection[tuple[object, ...]], roles: AccessRoles) -> list[str]:
    """The statements that would bring the roles and their privileges to what this module promises;
    an empty list when they are there already. Reads the catalogs only."""
    row = connection.execute(
        _PLAN,
        {
            "application": roles.application,
            "readonly": roles.readonly,
            "runner_tables": [TRACKING_TABLE, FINGERPRINT_TABLE],
            "iam": IAM_ROLE,
        },
    ).fetchone()
    assert row is not None
    iam_role_exists, statements = row
    if not iam_role_exists:
        raise RolesError(
            f"the role {IAM_ROLE} does not exist in this cluster: RDS creates it; locally "
            "scripts/local-db.sh start creates it"
        )
    return [str(statement) for statement in statements]  # type: ignore[attr-defined]


def ensure_roles(connection: psycopg.Connection[tuple[object, ...]], roles: AccessRoles) -> list[str]:
    """Apply what ``planned_changes`` finds missing, in one transaction; the statements it ran."""
    statements = planned_changes(connection, roles)
    if not statements:
        return []
    try:
        with connection.transaction():
            connection.execute(";\n".join(statements).encode())
    except psycopg.Error as error:
        raise RolesError(
            f"setting up the roles {roles.application} and {roles.readonly} failed: "
            f"{error.diag.message_primary or error}"
        ) from None
    return statements
