"""DatabaseStack: one environment's network, security groups, database and outputs."""

from __future__ import annotations

from aws_cdk import CfnOutput, Environment, Stack, Tags, Token
from constructs import Construct

from stacks.common import companion_removal_policy
from stacks.database import AuroraServerlessDatabase, DatabaseSecurityGroups, PostgresDatabase, RdsFreeDatabase
from stacks.network import DatabaseNetwork
from stacks.settings import EnvironmentSettings, Flavour


class DatabaseStack(Stack):
    """``PgSchemaDeploy-<environment>``.

    What later constructs (the migration function) use:
        settings: the EnvironmentSettings the stack was built from.
        network.vpc, network.database_subnets: where to put a function that connects.
        database: PostgresDatabase (resource, secret, endpoint, security_group, grant_connect()).
        clients_security_group: join it to reach PostgreSQL (also exported as an output).
    """

    def __init__(
        self,
        scope: Construct,
        settings: EnvironmentSettings,
        *,
        env: Environment | None = None,
    ) -> None:
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
        self._outputs()

    def _outputs(self) -> None:
        """Connection facts for applications; never a secret value, only the secret's ARN."""
        database = self.database
        outputs = {
            "DatabaseEndpoint": (database.endpoint.hostname, "Writer endpoint hostname"),
            "DatabasePort": (Token.as_string(database.endpoint.port), "PostgreSQL port"),
            "DatabaseName": (database.database_name, "Database the migrations run in"),
            "DatabaseUser": (database.username, "Master user (its password is in the secret)"),
            "DatabaseSecretArn": (
                database.secret.secret_arn,
                "Secrets Manager secret with username, password, host, port, dbname",
            ),
            "DatabaseClientsSecurityGroupId": (
                self.clients_security_group.security_group_id,
                "Join this security group to reach PostgreSQL",
            ),
            "DatabaseFlavour": (self.settings.flavour.value, "aurora-serverless or rds-free"),
            "PostgresVersion": (self.settings.engine_version, "Engine version (stacks/settings.py)"),
            "VpcId": (self.network.vpc.vpc_id, "VPC of the database"),
        }
        for name, (value, description) in outputs.items():
            CfnOutput(self, name, value=value, description=description, export_name=f"{self.stack_name}-{name}")
