"""``PgSchemaDeploy-github``: keyless deploy access for one GitHub repository's workflows.

Deployed once by an administrator. GitHub Actions exchange the job's OIDC token for one of two roles:
- the deploy role (deploy jobs of `main` -> testing and `production` -> production), which may
  assume the CDK bootstrap roles (everything `cdk deploy` does runs through those) and holds the
  rehearsal policy (stacks/rehearsal/policy.py: tagged clones of the environments' clusters, for
  the rehearsal a deploy runs first where an environment requires one);
- the pull-request role (`cdk diff` in pull requests), which may only assume the read-only lookup role.
"""

from __future__ import annotations

from aws_cdk import Aws, CfnOutput, Stack, Tags
from aws_cdk import aws_iam as iam
from constructs import Construct

from stacks.rehearsal.policy import rehearsal_policy
from stacks.settings import ENVIRONMENTS

from .settings import (
    DEPLOY_BOOTSTRAP_ROLES,
    GITHUB_OIDC_AUDIENCE,
    GITHUB_OIDC_HOST,
    GITHUB_STACK_NAME,
    PULL_REQUEST_BOOTSTRAP_ROLES,
    GithubSettings,
)


def bootstrap_role_arn(qualifier: str, kind: str) -> str:
    """ARN of a CDK bootstrap role in this stack's account and region (cdk-Q-KIND-role-ACCOUNT-REGION)."""
    return f"arn:{Aws.PARTITION}:iam::{Aws.ACCOUNT_ID}:role/cdk-{qualifier}-{kind}-role-{Aws.ACCOUNT_ID}-{Aws.REGION}"


class GithubDeployStack(Stack):
    """The GitHub OIDC provider (new, or the account's existing one) and the two roles it may assume."""

    def __init__(self, scope: Construct, settings: GithubSettings) -> None:
        super().__init__(
            scope,
            GITHUB_STACK_NAME,
            description=f"pg-schema-deploy: GitHub Actions OIDC roles for {settings.repository}",
        )
        self.settings = settings
        Tags.of(self).add("project", "pg-schema-deploy")

        self.provider: iam.IOidcProvider
        if settings.provider_arn is None:
            self.provider = iam.OidcProviderNative(
                self, "GithubOidcProvider", url=f"https://{GITHUB_OIDC_HOST}", client_ids=[GITHUB_OIDC_AUDIENCE]
            )
            provider_arn = self.provider.oidc_provider_arn
        else:
            self.provider = iam.OidcProviderNative.from_oidc_provider_arn(
                self, "GithubOidcProvider", settings.provider_arn
            )
            provider_arn = settings.provider_arn

        self.deploy_role = self._role(
            "DeployRole",
            provider_arn,
            subjects=settings.deploy_subjects,
            may_assume=DEPLOY_BOOTSTRAP_ROLES,
            description=f"GitHub Actions deploys of {settings.repository}: the CDK bootstrap roles, rehearsal clones",
        )
        self.deploy_role.add_managed_policy(rehearsal_policy(self, "RehearsalPolicy", ENVIRONMENTS.values()))
        self.pull_request_role = self._role(
            "PullRequestRole",
            provider_arn,
            subjects=(settings.pull_request_subject,),
            may_assume=PULL_REQUEST_BOOTSTRAP_ROLES,
            description=f"GitHub Actions pull requests of {settings.repository}: cdk diff through the lookup role",
        )

        CfnOutput(
            self,
            "DeployRoleArn",
            value=self.deploy_role.role_arn,
            description="Repository variable AWS_DEPLOY_ROLE_ARN (push to main / production)",
        )
        CfnOutput(
            self,
            "PullRequestRoleArn",
            value=self.pull_request_role.role_arn,
            description="Repository variable AWS_PR_ROLE_ARN (cdk diff in pull requests)",
        )
        CfnOutput(self, "OidcProviderArn", value=provider_arn, description="GitHub OIDC provider the roles trust")

    def _role(
        self,
        construct_id: str,
        provider_arn: str,
        *,
        subjects: tuple[str, ...],
        may_assume: tuple[str, ...],
        description: str,
    ) -> iam.Role:
        """A role for tokens of exactly ``subjects`` (audience sts.amazonaws.com), allowed only
        sts:AssumeRole on the bootstrap roles named in ``may_assume``."""
        principal = iam.WebIdentityPrincipal(
            provider_arn,
            conditions={
                "StringEquals": {
                    f"{GITHUB_OIDC_HOST}:aud": GITHUB_OIDC_AUDIENCE,
                    f"{GITHUB_OIDC_HOST}:sub": list(subjects),
                }
            },
        )
        role = iam.Role(self, construct_id, assumed_by=principal, description=description)
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["sts:AssumeRole"],
                resources=[bootstrap_role_arn(self.settings.qualifier, kind) for kind in may_assume],
            )
        )
        return role
