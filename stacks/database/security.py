"""Security groups: the database's, and the "database clients" group applications join."""

from __future__ import annotations

from aws_cdk import aws_ec2 as ec2
from constructs import Construct


class DatabaseSecurityGroups(Construct):
    """PostgreSQL is reachable only from members of ``clients_security_group``.

    ``database_security_group`` is attached to the database; it has one ingress rule (the port,
    from the clients group) and no egress. ``clients_security_group`` is exported by the stack:
    an ECS service or the migration function joins it to reach the database. Membership is the
    credential; the group keeps the default all-outbound egress because security-group rules are a
    union (a member's other groups decide its egress anyway) and because CloudFormation keeps the
    implicit allow-all egress of a group whose only egress rule is a separate resource.
    """

    def __init__(self, scope: Construct, construct_id: str, *, vpc: ec2.IVpc, port: int, environment: str) -> None:
        super().__init__(scope, construct_id)
        self.port = ec2.Port.tcp(port)
        self.clients_security_group = ec2.SecurityGroup(
            self,
            "Clients",
            vpc=vpc,
            description=f"pg-schema-deploy {environment}: members may connect to PostgreSQL on port {port}",
            allow_all_outbound=True,
        )
        self.database_security_group = ec2.SecurityGroup(
            self,
            "Database",
            vpc=vpc,
            description=f"pg-schema-deploy {environment}: PostgreSQL, port {port} from the clients group only",
            allow_all_outbound=False,
        )
        self.database_security_group.add_ingress_rule(
            self.clients_security_group, self.port, "PostgreSQL from the database clients group"
        )
