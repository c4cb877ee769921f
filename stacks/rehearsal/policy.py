"""The rights scripts/rehearse.sh needs, as one managed policy (the GitHub deploy role holds it, and
a person's role can be given it): read the environment's stack, invoke its migration function, make
tagged clones of its cluster and delete only tagged clones. Nothing here can change or delete an
environment's own database: creating is limited to clusters and instances named
``<cluster>-rehearsal-*`` and carrying the rehearsal tag, deleting to those that carry it."""

from __future__ import annotations

from collections.abc import Iterable

from aws_cdk import Aws
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.compliance import acknowledge
from stacks.rehearsal.clone import CLONE_INFIX, REHEARSAL_TAG
from stacks.settings import EnvironmentSettings


def _rds_arn(kind: str, name: str) -> str:
    return f"arn:{Aws.PARTITION}:rds:{Aws.REGION}:{Aws.ACCOUNT_ID}:{kind}:{name}"


def rehearsal_policy(
    scope: Construct, construct_id: str, environments: Iterable[EnvironmentSettings]
) -> iam.ManagedPolicy:
    """A managed policy for rehearsing on any of ``environments``."""
    environments = list(environments)
    clones = [f"{env.identifier}{CLONE_INFIX}*" for env in environments]
    tagged_request = {
        "StringEquals": {f"aws:RequestTag/{REHEARSAL_TAG}": [env.name for env in environments]},
        "ForAllValues:StringEquals": {"aws:TagKeys": [REHEARSAL_TAG]},
    }
    policy = iam.ManagedPolicy(
        scope,
        construct_id,
        description="pg-schema-deploy: scripts/rehearse.sh (clone a cluster, rehearse, delete the clone)",
        statements=[
            iam.PolicyStatement(
                sid="ReadTheEnvironment",
                actions=["cloudformation:DescribeStacks"],
                resources=[
                    f"arn:{Aws.PARTITION}:cloudformation:{Aws.REGION}:{Aws.ACCOUNT_ID}:stack/{env.stack_name}/*"
                    for env in environments
                ],
            ),
            iam.PolicyStatement(
                sid="DescribeClusters",
                actions=["rds:DescribeDBClusters", "rds:DescribeDBInstances"],
                resources=["*"],
            ),
            iam.PolicyStatement(
                sid="InvokeTheMigrationFunction",
                actions=["lambda:InvokeFunction"],
                resources=[
                    f"arn:{Aws.PARTITION}:lambda:{Aws.REGION}:{Aws.ACCOUNT_ID}:function:{env.identifier}-migrate"
                    for env in environments
                ],
            ),
            iam.PolicyStatement(
                sid="CloneTheClusterTagged",
                actions=["rds:RestoreDBClusterToPointInTime", "rds:CreateDBInstance", "rds:AddTagsToResource"],
                resources=[
                    *(_rds_arn("cluster", env.identifier) for env in environments),
                    *(_rds_arn("cluster", clone) for clone in clones),
                    *(_rds_arn("db", f"{clone}") for clone in clones),
                    _rds_arn("subgrp", "*"),
                    _rds_arn("cluster-pg", "*"),
                    _rds_arn("pg", "*"),
                ],
                conditions=tagged_request,
            ),
            iam.PolicyStatement(
                sid="DeleteOnlyTaggedClones",
                actions=["rds:DeleteDBCluster", "rds:DeleteDBInstance"],
                resources=[
                    *(_rds_arn("cluster", clone) for clone in clones),
                    *(_rds_arn("db", clone) for clone in clones),
                ],
                conditions={"Null": {f"aws:ResourceTag/{REHEARSAL_TAG}": "false"}},
            ),
        ],
    )
    account = "arn:<AWS::Partition>:{service}:<AWS::Region>:<AWS::AccountId>"
    rds = account.format(service="rds")
    reasons = {
        "Resource::*": "DescribeDBClusters and DescribeDBInstances list every cluster for --cleanup (finding "
        "tagged clones whose names are not known in advance); they read, never change.",
        **{
            f"Resource::{account.format(service='cloudformation')}:stack/{env.stack_name}/*": f"The {env.name} "
            "stack's ARN ends in an id CloudFormation generates; the policy names the stack itself."
            for env in environments
        },
        **{
            f"Resource::{rds}:{kind}:{clone}": "Clones are named <cluster>-rehearsal-<UTC timestamp>; creating one "
            "also requires the rehearsal tag on the request, deleting one the tag on the clone."
            for kind in ("cluster", "db")
            for clone in clones
        },
        **{
            f"Resource::{rds}:{kind}:*": "A clone uses its cluster's own subnet and parameter groups, whose names "
            "CloudFormation generates; the statement still requires the rehearsal tag on the request."
            for kind in ("subgrp", "cluster-pg", "pg")
        },
    }
    for finding, reason in reasons.items():
        acknowledge(policy, f"AwsSolutions-IAM5[{finding}]", reason)
    return policy
