"""What every database flavour offers to the rest of the app (the migration function, outputs)."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.common import companion_removal_policy
from stacks.compliance import acknowledge
from stacks.database.security import DatabaseSecurityGroups
from stacks.settings import EnvironmentSettings


class PostgresDatabase(Construct):
    """Common surface of AuroraServerlessDatabase and RdsFreeDatabase.

    Attributes:
        resource: the ``rds.DatabaseCluster`` or ``rds.DatabaseInstance`` (``...FromSnapshot`` when the
            environment is restored from a snapshot).
        secret: the master user's secret, created and rotated by RDS (JSON: username, password).
        endpoint: ``rds.Endpoint`` (hostname, port) of the writer.
        vpc / subnets: where the database runs; a function that connects goes in the same subnets.
        security_group: the database's own group; clients_security_group: the group clients join.
        database_name / username: ``users_<environment>`` / ``webapp``.
    """

    resource: rds.DatabaseClusterBase | rds.DatabaseInstanceBase
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
        key_arn = settings.access.master_secret_kms_key_arn
        self.secret_key = kms.Key.from_key_arn(self, "MasterSecretKey", key_arn) if key_arn else None

    def master_credentials(self) -> rds.Credentials:
        """The master user, its password left to RDS (``manage_master_user_password``): RDS keeps it
        in a secret of its own and rotates it with no Lambda and no network path from the VPC."""
        return rds.Credentials.from_username(self.username, encryption_key=self.secret_key)

    def adopt_master_secret(self, secret: secretsmanager.ISecret | None) -> None:
        """The secret RDS made for the master user, with a rotation every ``master_password_rotation_days``.

        Rules only, no rotation function: RDS rotates its own secrets. Kept with the database when the
        stack goes (deleting the schedule would cancel the rotation of a retained database's secret).
        """
        if secret is None:
            raise ValueError("the database has no master secret: manage_master_user_password must be on")
        self.secret = secret
        schedule = secretsmanager.CfnRotationSchedule(
            self,
            "MasterPasswordRotation",
            secret_id=secret.secret_arn,
            rotation_rules=secretsmanager.CfnRotationSchedule.RotationRulesProperty(
                automatically_after_days=self.settings.access.master_password_rotation_days
            ),
            rotate_immediately_on_update=False,
        )
        schedule.apply_removal_policy(companion_removal_policy(self.settings.removal))

    @property
    def identifier(self) -> str:
        """The cluster's / instance's name (pg-schema-deploy-<env>): what scripts/rehearse.sh clones."""
        resource = self.resource
        if isinstance(resource, rds.DatabaseClusterBase):
            return resource.cluster_identifier
        return resource.instance_identifier

    @property
    def resource_id(self) -> str:
        """The cluster's / instance's resource id: unique to each physical database, and the
        middle of its IAM database-user ARNs."""
        resource = self.resource
        if isinstance(resource, rds.DatabaseClusterBase):
            return resource.cluster_resource_identifier
        cfn_instance = resource.node.default_child
        assert isinstance(cfn_instance, rds.CfnDBInstance)
        return cfn_instance.attr_dbi_resource_id

    def db_user_arn(self, db_user: str) -> str:
        """``arn:aws:rds-db:<region>:<account>:dbuser:<resource id>/<db_user>``: what rds-db:connect names."""
        return Stack.of(self).format_arn(
            service="rds-db",
            resource="dbuser",
            resource_name=f"{self.resource_id}/{db_user}",
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )

    def connect_policy(self, construct_id: str, db_user: str, description: str) -> iam.ManagedPolicy:
        """A managed policy whose only statement lets its holder log in as ``db_user`` with an IAM token."""
        return iam.ManagedPolicy(
            self,
            construct_id,
            description=description,
            statements=[iam.PolicyStatement(actions=["rds-db:connect"], resources=[self.db_user_arn(db_user)])],
        )

    def grant_secret_read(self, grantee: iam.IGrantable) -> None:
        """GetSecretValue on exactly the master secret (and Decrypt with its key when that is a
        customer managed key; the AWS managed key needs no grant)."""
        grantee.grant_principal.add_to_principal_policy(
            iam.PolicyStatement(actions=["secretsmanager:GetSecretValue"], resources=[self.secret.secret_arn])
        )
        if self.secret_key is not None:
            region = Stack.of(self).region
            grantee.grant_principal.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=["kms:Decrypt"],
                    resources=[self.secret_key.key_arn],
                    conditions={"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
                )
            )

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
