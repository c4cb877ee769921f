"""DatabaseStack: one environment's network, security groups, database and outputs."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from aws_cdk import CfnOutput, Environment, Stack, Tags, Token
from constructs import Construct

from stacks.common import companion_removal_policy
from stacks.database import AuroraServerlessDatabase, DatabaseSecurityGroups, PostgresDatabase, RdsFreeDatabase
from stacks.migration.asset import AssetBuildError, build_migration_asset
from stacks.migration.schema_migration import SchemaMigration
from stacks.network import DatabaseNetwork
from stacks.settings import EnvironmentSettings, Flavour, SettingsError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@cache
def project_migration_asset() -> Path:
    """The Lambda asset (handlers, runner core, migrations, psycopg), built once per synth for all stacks.

    A build failure (say, no network for a first download of psycopg's wheels) is one line from app.py.
    """
    try:
        return build_migration_asset(PROJECT_ROOT)
    except AssetBuildError as error:
        raise SettingsError(f"the deploy-time migration asset cannot be built: {error}") from None


class DatabaseStack(Stack):
    """``PgSchemaDeploy-<environment>``.

    What later constructs (the migration function) use:
        settings: the EnvironmentSettings the stack was built from.
        network.vpc, network.database_subnets: where to put a function that connects.
        database: PostgresDatabase (resource, secret, endpoint, security_group, grant_connect()).
        clients_security_group: join it to reach PostgreSQL (also exported as an output).
        migration: SchemaMigration (None only when built with ``schema_migration=False``).
    """

    def __init__(
        self,
        scope: Construct,
        settings: EnvironmentSettings,
        *,
        env: Environment | None = None,
        schema_migration: bool = True,
        migration_asset: Path | None = None,
    ) -> None:
        """``migration_asset`` defaults to the project's (database/migrations and lambda/);
        ``schema_migration=False`` leaves the migration out, for the synth benchmark's baseline only."""
        super().__init__(
            scope,
            settings.stack_name,
            env=env,
            description=(
                f"pg-schema-deploy {settings.name}: PostgreSQL {settings.engine_version} "
                f"({settings.flavour.value}) in a private network"
            ),
            termination_protection=settings.deletion_protection,
        )
        self.settings = settings
        Tags.of(self).add("project", "pg-schema-deploy")
        Tags.of(self).add("environment", settings.name)

        self.network = DatabaseNetwork(
            self,
            "Network",
            settings=settings.network,
            log_retention_days=settings.log_retention_days,
            removal_policy=companion_removal_policy(settings.removal),
        )
        self.security = DatabaseSecurityGroups(
            self, "Security", vpc=self.network.vpc, port=settings.port, environment=settings.name
        )
        self.clients_security_group = self.security.clients_security_group
        database_class = AuroraServerlessDatabase if settings.flavour is Flavour.AURORA_SERVERLESS else RdsFreeDatabase
        self.database: PostgresDatabase = database_class(
            self,
            "Database",
            settings=settings,
            vpc=self.network.vpc,
            subnets=self.network.database_subnets,
            security=self.security,
        )
        self.migration: SchemaMigration | None = None
        if schema_migration:
            self.migration = SchemaMigration(
                self,
                "SchemaMigration",
                settings=settings,
                database=self.database,
                asset_directory=migration_asset or project_migration_asset(),
            )
        self._outputs()

    def _outputs(self) -> None:
        """Connection facts for applications, their logins and the policies that let them log in;
        never a secret value, only the master secret's ARN."""
        database = self.database
        access = self.settings.access
        application_policy = database.connect_policy(
            "ApplicationConnectPolicy",
            access.application_role,
            f"pg-schema-deploy {self.settings.name}: log in to PostgreSQL as {access.application_role} (IAM token)",
        )
        readonly_policy = database.connect_policy(
            "ReadOnlyConnectPolicy",
            access.readonly_role,
            f"pg-schema-deploy {self.settings.name}: log in to PostgreSQL as {access.readonly_role} (IAM token)",
        )
        outputs = {
            "DatabaseEndpoint": (database.endpoint.hostname, "Writer endpoint hostname"),
            "DatabasePort": (Token.as_string(database.endpoint.port), "PostgreSQL port"),
            "DatabaseName": (database.database_name, "Database the migrations run in"),
            "DatabaseUser": (database.username, "Master user: migrations and administration, not applications"),
            "DatabaseSecretArn": (
                database.secret.secret_arn,
                f"The master user's secret (username, password), kept by RDS and rotated every "
                f"{access.master_password_rotation_days} days",
            ),
            "ApplicationUser": (access.application_role, "Application login: IAM token only, read/write on the tables"),
            "ApplicationConnectPolicyArn": (
                application_policy.managed_policy_arn,
                "Managed policy: rds-db:connect as the application user; attach it to the task role",
            ),
            "ReadOnlyUser": (access.readonly_role, "Read-only login (reports, support): IAM token only, SELECT"),
            "ReadOnlyConnectPolicyArn": (
                readonly_policy.managed_policy_arn,
                "Managed policy: rds-db:connect as the read-only user",
            ),
            "DatabaseClientsSecurityGroupId": (
                self.clients_security_group.security_group_id,
                "Join this security group to reach PostgreSQL",
            ),
            "DatabaseFlavour": (self.settings.flavour.value, "aurora-serverless or rds-free"),
            "DatabaseIdentifier": (
                database.identifier,
                "The cluster's (or instance's) identifier; scripts/rehearse.sh clones the cluster",
            ),
            "PostgresVersion": (self.settings.engine_version, "Engine version (stacks/settings.py)"),
            "VpcId": (self.network.vpc.vpc_id, "VPC of the database"),
        }
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description, export_name=f"{self.stack_name}-{name}")
        if self.migration is None:
            return
        # Not exported: their values change on deploys, and CloudFormation refuses to change an
        # export another stack imports.
        migration_outputs = {
            "SchemaVersion": (
                self.migration.resource.get_att_string("SchemaVersion"),
                "Latest applied migration after this deploy",
            ),
            "MigrationsApplied": (
                self.migration.resource.get_att_string("AppliedThisDeploy"),
                "Migrations the last migrating deploy applied (none on a rollback)",
            ),
            "MigrationFunctionName": (
                self.migration.deploy_function.function_name,
                "Deploy-time migration function; scripts/run-migrations.sh --status invokes it",
            ),
        }
        for name, (value, description) in migration_outputs.items():
            CfnOutput(self, name, value=value, description=description)
