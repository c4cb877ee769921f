"""What every database flavour offers to the rest of the app (the migration function, outputs)."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.compliance import acknowledge
from stacks.database.security import DatabaseSecurityGroups
from stacks.settings import EnvironmentSettings


class PostgresDatabase(Construct):
    """Common surface of AuroraServerlessDatabase and RdsFreeDatabase.

    Attributes:
        resource: the ``rds.DatabaseCluster`` or ``rds.DatabaseInstance``.
        secret: Secrets Manager secret with username, password, host, port, dbname (JSON).
        endpoint: ``rds.Endpoint`` (hostname, port) of the writer.
        vpc / subnets: where the database runs; a function that connects goes in the same subnets.
        security_group: the database's own group; clients_security_group: the group clients join.
        database_name / username: ``users_<environment>`` / ``webapp``.
    """

    resource: rds.DatabaseCluster | rds.DatabaseInstance
    secret: secretsmanager.ISecret
    endpoint: rds.Endpoint

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: EnvironmentSettings,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        security: DatabaseSecurityGroups,
    ) -> None:
        super().__init__(scope, construct_id)
        self.settings = settings
        self.vpc = vpc
        self.subnets = subnets
        self.security_group = security.database_security_group
        self.clients_security_group = security.clients_security_group
        self.database_name = settings.database_name
        self.username = settings.username
        self.engine_version = settings.engine_version

    def grant_connect(self, grantee: iam.IGrantable, db_user: str | None = None) -> iam.Grant:
        """Allow ``grantee`` to log in with IAM database authentication (rds-db:connect)."""
        return self.resource.grant_connect(grantee, db_user or self.username)


def acknowledge_common_findings(database: Construct, settings: EnvironmentSettings) -> None:
    """cdk-nag findings both flavours share, each with the reason it does not apply here."""
    if not settings.deletion_protection:
        acknowledge(
            database,
            "AwsSolutions-RDS10",
            f"The {settings.name} environment is meant to be destroyed with `cdk destroy`; deletion "
            "protection is on in production (stacks/settings.py).",
        )
    acknowledge(
        database,
        "AwsSolutions-SMG4",
        "A rotation Lambda would sit in the database's isolated subnets, which by design have no route to "
        "Secrets Manager (no NAT gateway or interface endpoint, see the cost table); applications and the "
        "migration function can use IAM database authentication instead of the master password.",
    )
