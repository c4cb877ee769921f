"""Settings of the GitHub deploy-access stack, read from `cdk -c KEY=VALUE` (pure Python, no CDK).

The stack exists only when ``github_repository`` is given, so a plain `cdk synth` / `cdk deploy
PgSchemaDeploy-testing` never sees it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from stacks.settings import PROJECT_NAME, ContextError

REPOSITORY_KEY = "github_repository"
PROVIDER_ARN_KEY = "github_oidc_provider_arn"
TRUST_KEY = "github_deploy_trust"
QUALIFIER_KEY = "cdk_bootstrap_qualifier"

# Every context key this stack reads; the app's unknown-key check registers these.
GITHUB_CONTEXT_KEYS = (REPOSITORY_KEY, PROVIDER_ARN_KEY, TRUST_KEY, QUALIFIER_KEY)

GITHUB_STACK_NAME = f"{PROJECT_NAME}-github"
GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
GITHUB_OIDC_AUDIENCE = "sts.amazonaws.com"
DEFAULT_CDK_QUALIFIER = "hnb659fds"  # `cdk bootstrap`'s default qualifier

# Which branch deploys which environment (the workflows in .github/workflows say the same).
DEPLOY_BRANCHES: Mapping[str, str] = {"testing": "main", "production": "production"}

# The CDK bootstrap roles `cdk deploy` assumes (cdk-QUALIFIER-KIND-role-ACCOUNT-REGION); the
# CloudFormation execution role is not among them: only CloudFormation itself may assume that one.
DEPLOY_BOOTSTRAP_ROLES = ("deploy", "file-publishing", "image-publishing", "lookup")
PULL_REQUEST_BOOTSTRAP_ROLES = ("lookup",)

_REPOSITORY = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})/[A-Za-z0-9._-]{1,100}")
_PROVIDER_ARN = re.compile(rf"arn:aws[a-z-]*:iam::\d{{12}}:oidc-provider/{re.escape(GITHUB_OIDC_HOST)}")
_QUALIFIER = re.compile(r"[A-Za-z0-9_-]{1,10}")  # what `cdk bootstrap --qualifier` accepts


class DeployTrust(StrEnum):
    """Which OIDC subjects the deploy role trusts: what the deploy job's token carries."""

    ENVIRONMENT = "environment"  # repo:OWNER/REPO:environment:testing|production (jobs with `environment:`)
    BRANCH = "branch"  # repo:OWNER/REPO:ref:refs/heads/main|production (jobs without one)


@dataclass(frozen=True)
class GithubSettings:
    repository: str  # OWNER/REPO
    provider_arn: str | None = None  # the account's existing GitHub OIDC provider, reused
    deploy_trust: DeployTrust = DeployTrust.ENVIRONMENT
    qualifier: str = DEFAULT_CDK_QUALIFIER

    @property
    def deploy_subjects(self) -> tuple[str, ...]:
        """The `sub` claims the deploy role accepts, one per environment."""
        if self.deploy_trust is DeployTrust.ENVIRONMENT:
            return tuple(f"repo:{self.repository}:environment:{env}" for env in DEPLOY_BRANCHES)
        return tuple(f"repo:{self.repository}:ref:refs/heads/{branch}" for branch in DEPLOY_BRANCHES.values())

    @property
    def pull_request_subject(self) -> str:
        """The `sub` claim of every pull_request workflow run of the repository."""
        return f"repo:{self.repository}:pull_request"


def _string(context: Mapping[str, object], key: str) -> str | None:
    value = context.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ContextError(f"context key {key!r} must be a string, got {value!r}")
    return value


def github_settings_from_context(context: Mapping[str, object]) -> GithubSettings | None:
    """The stack's settings, or None without ``github_repository``; ContextError for bad values."""
    repository = _string(context, REPOSITORY_KEY)
    others = [key for key in GITHUB_CONTEXT_KEYS[1:] if _string(context, key) is not None]
    if repository is None:
        if others:
            raise ContextError(f"context key {others[0]!r} needs {REPOSITORY_KEY}=OWNER/REPO as well")
        return None
    if not _REPOSITORY.fullmatch(repository):
        raise ContextError(
            f"context key {REPOSITORY_KEY!r}={repository!r}: expected OWNER/REPO, e.g. octo-org/users-api"
        )
    provider_arn = _string(context, PROVIDER_ARN_KEY)
    if provider_arn is not None and not _PROVIDER_ARN.fullmatch(provider_arn):
        raise ContextError(
            f"context key {PROVIDER_ARN_KEY!r}={provider_arn!r}: expected "
            f"arn:aws:iam::ACCOUNT_ID:oidc-provider/{GITHUB_OIDC_HOST}"
        )
    trust = _string(context, TRUST_KEY) or DeployTrust.ENVIRONMENT.value
    allowed = [choice.value for choice in DeployTrust]
    if trust not in allowed:
        raise ContextError(f"context key {TRUST_KEY!r}={trust!r}: allowed values are {', '.join(allowed)}")
    qualifier = _string(context, QUALIFIER_KEY) or DEFAULT_CDK_QUALIFIER
    if not _QUALIFIER.fullmatch(qualifier):
        raise ContextError(
            f"context key {QUALIFIER_KEY!r}={qualifier!r}: 1-10 letters, digits, '-' or '_' (as in cdk bootstrap)"
        )
    return GithubSettings(
        repository=repository, provider_arn=provider_arn, deploy_trust=DeployTrust(trust), qualifier=qualifier
    )
