"""Builds the CDK app: one DatabaseStack per environment, AwsSolutions checks on every synth."""

from __future__ import annotations

import os

from aws_cdk import App, Environment

from stacks.compliance import add_nag_checks
from stacks.database_stack import DatabaseStack
from stacks.github import GithubDeployStack, github_settings_from_context
from stacks.settings import ENVIRONMENTS, ContextError, EnvironmentSettings, apply_context


def stack_environment(settings: EnvironmentSettings) -> Environment | None:
    """None (environment-agnostic: no credentials, no lookups) unless an existing VPC is used."""
    if settings.network.vpc_id is None:
        return None
    account = os.environ.get("CDK_DEFAULT_ACCOUNT")
    region = os.environ.get("CDK_DEFAULT_REGION")
    if not account or not region:
        raise ContextError(
            f"vpc_id={settings.network.vpc_id} needs a context lookup, so the {settings.name} stack needs an "
            "account and region: run cdk with AWS credentials and a region (CDK_DEFAULT_ACCOUNT/REGION)"
        )
    return Environment(account=account, region=region)


def create_stacks(app: App, *, nag: bool = True, schema_migration: bool = True) -> list[DatabaseStack]:
    """Adds every environment's stack to ``app`` (context overrides applied) and the cdk-nag plugin.

    ``schema_migration=False`` leaves out the deploy-time migration: only for the synth benchmark.
    """
    context = app.node.get_all_context()
    environments = apply_context(context, ENVIRONMENTS)
    stacks = [
        DatabaseStack(app, settings, env=stack_environment(settings), schema_migration=schema_migration)
        for settings in environments
    ]
    github = github_settings_from_context(context)
    if github is not None:  # only with -c github_repository=OWNER/REPO (deployed once by an administrator)
        GithubDeployStack(app, github)
    if nag:
        add_nag_checks(app)
    return stacks
