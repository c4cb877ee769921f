"""The GitHub Actions deploy-access stack (``PgSchemaDeploy-github``), added only with ``-c github_repository``."""

from .settings import GITHUB_CONTEXT_KEYS, GITHUB_STACK_NAME, GithubSettings, github_settings_from_context
from .stack import GithubDeployStack

__all__ = [
    "GITHUB_CONTEXT_KEYS",
    "GITHUB_STACK_NAME",
    "GithubDeployStack",
    "GithubSettings",
    "github_settings_from_context",
]
