"""RDS for PostgreSQL on a free-tier micro instance: 20 GB gp2, Single-AZ unless multi_az."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.common import companion_removal_policy, log_retention, removal_policy
from stacks.compliance import acknowledge
from stacks.database.base import PostgresDatabase, acknowledge_common_findings
from stacks.database.parameters import POSTGRES_PARAMETERS
from stacks.database.security import DatabaseSecurityGroups
from stacks.settings import EnvironmentSettings, Flavour, Removal

LOG_EXPORTS = ("postgresql", "upgrade")


class RdsFreeDatabase(PostgresDatabase):
    """A db.t3.micro (or db.t4g.micro) PostgreSQL instance: the RDS free-tier shape."""

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
        if settings.flavour is not Flavour.RDS_FREE:
            raise ValueError(f"{settings.name} is configured for {settings.flavour}, not rds-free")
        super().__init__(scope, construct_id, settings=settings, vpc=vpc, subnets=subnets, security=security)
        engine = rds.DatabaseInstanceEngine.postgres(
            version=rds.PostgresEngineVersion.of(settings.engine_version, str(settings.major_version))
        )
        parameters = rds.ParameterGroup(
            self,
            "Parameters",
            engine=engine,
            description=f"pg-schema-deploy {settings.name}: TLS only, statement and connection logging",
            parameters=POSTGRES_PARAMETERS,
        )
        log_groups = [
            logs.LogGroup(
                self,
                f"{name.capitalize()}Log",
                log_group_name=f"/aws/rds/instance/{settings.identifier}/{name}",
                retention=log_retention(settings.log_retention_days),
                removal_policy=companion_removal_policy(settings.removal),
            )
            for name in LOG_EXPORTS
        ]
        instance_props = dict(
            instance_identifier=settings.identifier,
            engine=engine,
            instance_type=ec2.InstanceType(settings.rds.cdk_instance_type),
            allocated_storage=settings.rds.allocated_storage_gib,
            storage_type=rds.StorageType.GP2,
            multi_az=settings.multi_az,
            publicly_accessible=False,
            auto_minor_version_upgrade=True,
            port=settings.port,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[security.database_security_group],
            parameter_group=parameters,
            iam_authentication=True,
            backup_retention=Duration.days(settings.backup_retention_days),
            preferred_backup_window="03:00-04:00",
            preferred_maintenance_window="sun:04:30-sun:05:30",
            delete_automated_backups=settings.removal is Removal.DESTROY,
            cloudwatch_logs_exports=list(LOG_EXPORTS),
            copy_tags_to_snapshot=True,
            deletion_protection=settings.deletion_protection,
            removal_policy=removal_policy(settings.removal),
        )
        instance: rds.DatabaseInstance | rds.DatabaseInstanceFromSnapshot
        if settings.restore.snapshot is None:
            instance = rds.DatabaseInstance(
                self,
                "Instance",
                storage_encrypted=True,
                credentials=self.master_credentials(),
                manage_master_user_password=True,
                database_name=settings.database_name,
                **instance_props,  # type: ignore[arg-type]
            )
            secret = instance.secret
        else:
            instance, secret = self._restored_instance(settings.restore.snapshot, instance_props)
        for log_group in log_groups:
            instance.node.add_dependency(log_group)
        self.resource = instance
        self.instance = instance
        self.log_groups = log_groups
        self.adopt_master_secret(secret)
        self.endpoint = instance.instance_endpoint

        acknowledge_common_findings(instance, settings)
        acknowledge(
            instance,
            "AwsSolutions-RDS11",
            "Port 5432 kept on purpose: the instance sits in isolated subnets and its security group admits "
            "only the database clients group, so a non-default port adds no protection but breaks the "
            "defaults of psql, the migration runner and application drivers.",
        )
        if not settings.multi_az:
            acknowledge(
                instance,
                "AwsSolutions-RDS3",
                "Single-AZ on purpose: the free tier covers Single-AZ micro instances only and a standby "
                "doubles the instance cost; set multi_az=True in stacks/settings.py for a standby.",
            )

    def _restored_instance(
        self, snapshot: str, instance_props: dict[str, object]
    ) -> tuple[rds.DatabaseInstanceFromSnapshot, secretsmanager.ISecret]:
        """The instance restored from ``snapshot``, and its master secret.

        Its master user and databases are the snapshot's (CloudFormation forbids MasterUsername and
        DBName on a restore). aws-cdk-lib offers no managed password here, so the template says it
        itself: CloudFormation restores, then turns ManageMasterUserPassword on as for a new instance
        (RDS makes a secret of its own with a new password and rotates it). StorageEncrypted states
        what the (encrypted) snapshot brings; RDS takes the encryption from the snapshot.
        """
        instance = rds.DatabaseInstanceFromSnapshot(
            self, "Instance", snapshot_identifier=snapshot, **instance_props  # type: ignore[arg-type]
        )
        cfn_instance = instance.node.default_child
        assert isinstance(cfn_instance, rds.CfnDBInstance)
        cfn_instance.manage_master_user_password = True
        cfn_instance.storage_encrypted = True
        if self.secret_key is not None:
            cfn_instance.master_user_secret = rds.CfnDBInstance.MasterUserSecretProperty(
                kms_key_id=self.secret_key.key_arn
            )
        secret = secretsmanager.Secret.from_secret_attributes(
            self,
            "MasterSecret",
            secret_complete_arn=cfn_instance.attr_master_user_secret_secret_arn,
            encryption_key=self.secret_key,
        )
        return instance, secret
