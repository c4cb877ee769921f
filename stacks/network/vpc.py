"""DatabaseNetwork: a new VPC without NAT gateways (default) or an existing VPC looked up by id."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from stacks.common import log_retention
from stacks.settings import NetworkSettings


class DatabaseNetwork(Construct):
    """Where the database runs.

    Attributes a later construct (the migration function, an ECS service) uses:
    ``vpc`` and ``database_subnets`` (a SubnetSelection of the subnets the database sits in).
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: NetworkSettings,
        log_retention_days: int,
        removal_policy: RemovalPolicy,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc: ec2.IVpc
        if settings.vpc_id is not None:
            # The only context lookup of the app; the stack must then have an explicit account/region.
            self.vpc = ec2.Vpc.from_lookup(self, "Vpc", vpc_id=settings.vpc_id)
            self.database_subnets = self._existing_vpc_subnets(self.vpc, settings.vpc_id)
            return

        subnets = [
            # Public subnets cost nothing while empty; they are where a NAT gateway would go, and where
            # an application's load balancer can live.
            ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
            ec2.SubnetConfiguration(name="database", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24),
        ]
        if settings.nat_gateways:
            subnets.append(
                ec2.SubnetConfiguration(
                    name="application", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                )
            )
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(settings.cidr),
            max_azs=settings.max_azs,
            nat_gateways=settings.nat_gateways,
            subnet_configuration=subnets,
        )
        # VPC flow logs (rejected traffic only: the interesting part, at a fraction of the volume).
        flow_log_group = logs.LogGroup(
            self,
            "FlowLogs",
            retention=log_retention(log_retention_days),
            removal_policy=removal_policy,
        )
        vpc.add_flow_log(
            "FlowLog",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_log_group),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )
        self.vpc = vpc
        self.database_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)

    @staticmethod
    def _existing_vpc_subnets(vpc: ec2.IVpc, vpc_id: str) -> ec2.SubnetSelection:
        """Isolated subnets if the VPC has them, else private subnets with egress; never public."""
        if vpc.isolated_subnets:
            return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED)
        if vpc.private_subnets:
            return ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        raise ValueError(f"VPC {vpc_id} has no private or isolated subnets for the database")
