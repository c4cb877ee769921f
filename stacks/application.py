"""Builds the CDK app: one DatabaseStack per environment, AwsSolutions checks on every synth."""

from __future__ import annotations

import os

from aws_cdk import App, Environment

from stacks.compliance import add_nag_checks
from stacks.database_stack import DatabaseStack
from stacks.github import GITHUB_CONTEXT_KEYS, GithubDeployStack, github_settings_from_context
from stacks.settings import (
    CONTEXT_KEYS,
    ENVIRONMENTS,
    ContextError,
    EnvironmentSettings,
    apply_context,
    check_known_context_keys,
)

# Every `-c KEY=VALUE` the app reads is registered here; any other key stops the synth (CDK's own
# `@...`/`aws:...` keys and cached lookups pass). A feature that reads a new key adds it below.
# Keys that also exist per environment as KEY.<environment> (see stacks/settings.py):
PER_ENVIRONMENT_CONTEXT_KEYS: tuple[str, ...] = CONTEXT_KEYS
# Keys read once for the whole app:
APP_CONTEXT_KEYS: tuple[str, ...] = GITHUB_CONTEXT_KEYS


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
    check_known_context_keys(
        context, APP_CONTEXT_KEYS + PER_ENVIRONMENT_CONTEXT_KEYS, PER_ENVIRONMENT_CONTEXT_KEYS, ENVIRONMENTS
    )
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
