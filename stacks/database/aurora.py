"""Aurora Serverless v2 PostgreSQL: one db.serverless writer, scale to zero where settings allow."""

from __future__ import annotations

from aws_cdk import Annotations, Duration
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from aws_cdk import aws_rds as rds
from constructs import Construct

from stacks.common import companion_removal_policy, log_retention, removal_policy
from stacks.database.base import PostgresDatabase, acknowledge_common_findings
from stacks.database.parameters import POSTGRES_PARAMETERS
from stacks.database.security import DatabaseSecurityGroups
from stacks.settings import EnvironmentSettings, Flavour


class AuroraServerlessDatabase(PostgresDatabase):
    """Aurora PostgreSQL cluster with a Serverless v2 writer (and a reader in another AZ if multi_az)."""

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
        if settings.flavour is not Flavour.AURORA_SERVERLESS:
            raise ValueError(f"{settings.name} is configured for {settings.flavour}, not aurora-serverless")
        super().__init__(scope, construct_id, settings=settings, vpc=vpc, subnets=subnets, security=security)
        capacity = settings.aurora
        engine = rds.DatabaseClusterEngine.aurora_postgres(
            version=rds.AuroraPostgresEngineVersion.of(settings.engine_version, str(settings.major_version))
        )
        parameters = rds.ParameterGroup(
            self,
            "ClusterParameters",
            engine=engine,
            description=f"pg-schema-deploy {settings.name}: TLS only, statement and connection logging",
            parameters=POSTGRES_PARAMETERS,
        )
        # Created before the cluster so that its retention and removal policy apply (RDS would
        # otherwise create the group itself, with infinite retention, outside the stack).
        log_group = logs.LogGroup(
            self,
            "PostgresqlLog",
            log_group_name=f"/aws/rds/cluster/{settings.identifier}/postgresql",
            retention=log_retention(settings.log_retention_days),
            removal_policy=companion_removal_policy(settings.removal),
        )
        readers = []
        if settings.multi_az:
            # A reader in a second AZ that failover can promote; it follows the writer's capacity.
            readers.append(rds.ClusterInstance.serverless_v2("reader", scale_with_writer=True))
        cluster_props = dict(
            cluster_identifier=settings.identifier,
            engine=engine,
            writer=rds.ClusterInstance.serverless_v2("writer", publicly_accessible=False),
            readers=readers,
            serverless_v2_min_capacity=capacity.min_acu,
            serverless_v2_max_capacity=capacity.max_acu,
            serverless_v2_auto_pause_duration=(
                Duration.seconds(capacity.auto_pause_seconds) if capacity.auto_pause_seconds else None
            ),
            manage_master_user_password=True,
            port=settings.port,
            vpc=vpc,
            vpc_subnets=subnets,
            security_groups=[security.database_security_group],
            parameter_group=parameters,
            storage_encrypted=True,
            iam_authentication=True,
            backup=rds.BackupProps(
                retention=Duration.days(settings.backup_retention_days), preferred_window="03:00-04:00"
            ),
            preferred_maintenance_window="sun:04:30-sun:05:30",
            cloudwatch_logs_exports=["postgresql"],
            copy_tags_to_snapshot=True,
            deletion_protection=settings.deletion_protection,
            removal_policy=removal_policy(settings.removal),
        )
        cluster: rds.DatabaseCluster | rds.DatabaseClusterFromSnapshot
        if settings.restore.snapshot is None:
            cluster = rds.DatabaseCluster(
                self,
                "Cluster",
                credentials=self.master_credentials(),
                default_database_name=settings.database_name,
                **cluster_props,  # type: ignore[arg-type]
            )
        else:
            cluster = self._restored_cluster(settings.restore.snapshot, cluster_props)
        cluster.node.add_dependency(log_group)
        self.resource = cluster
        self.cluster = cluster
        self.log_group = log_group
        self.adopt_master_secret(cluster.secret)
        self.endpoint = cluster.cluster_endpoint

        acknowledge_common_findings(cluster, settings)

    def _restored_cluster(self, snapshot: str, cluster_props: dict[str, object]) -> rds.DatabaseClusterFromSnapshot:
        """The cluster restored from ``snapshot``: its master user and databases are the snapshot's
        (CloudFormation forbids MasterUsername on a restore), and RDS takes over its password as for a
        new cluster (ManageMasterUserPassword: a secret of RDS's own, a new password, rotated)."""
        cluster = rds.DatabaseClusterFromSnapshot(
            self, "Cluster", snapshot_identifier=snapshot, **cluster_props  # type: ignore[arg-type]
        )
        if self.secret_key is not None:
            cfn_cluster = cluster.node.default_child
            assert isinstance(cfn_cluster, rds.CfnDBCluster)
            cfn_cluster.master_user_secret = rds.CfnDBCluster.MasterUserSecretProperty(
                kms_key_id=self.secret_key.key_arn
            )
        Annotations.of(cluster).acknowledge_warning(
            "@aws-cdk/aws-rds:generatedCredsNotApplied",
            "The master user is the snapshot's; RDS manages its password (manage_master_user_password)",
        )
        return cluster
