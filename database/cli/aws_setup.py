"""One line for a mistake in the local AWS setup: a missing profile, a malformed config file, no or
partial credentials, an SSO sign-in that is missing or expired. botocore raises these before any
request leaves the machine, with messages that name neither the profile nor the fix; every
AWS-facing command (run-migrations.sh --environment testing|production, deploy/diff/destroy.sh)
turns them into what to run instead of a traceback."""

from __future__ import annotations

import os
import re

from botocore.exceptions import (
    ConfigNotFound,
    ConfigParseError,
    CredentialRetrievalError,
    InvalidConfigError,
    NoCredentialsError,
    PartialCredentialsError,
    ProfileNotFound,
    RefreshWithMFAUnsupportedError,
    SSOError,
    TokenRetrievalError,
)

GITHUB_ACTIONS_HINT = "in GitHub Actions assume the deploy role with aws-actions/configure-aws-credentials"


def _profile() -> str | None:
    """The profile botocore uses, as the user named it (None: the default chain)."""
    return os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or None


def _config_file() -> str:
    return os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"


def setup_problem(error: Exception) -> str | None:
    """What is wrong with the AWS setup and what to run, for botocore's configuration, credential
    and sign-in errors; None for any other error (a request that failed says so itself)."""
    profile = _profile()
    of_profile = f" of profile {profile!r}" if profile else ""
    flag = f" --profile {profile}" if profile else ""
    details = getattr(error, "kwargs", {})
    match error:
        case ProfileNotFound():
            name = details.get("profile", profile)
            return (
                f"AWS profile {name!r} is not in {_config_file()}: create it with `aws configure --profile {name}` "
                f"(or `aws configure sso --profile {name}`), or set AWS_PROFILE to a profile that exists"
            )
        case ConfigParseError():
            reason = str(details.get("error") or "").strip()
            line = re.search(r"line:? (\d+)", reason)
            where = f" (line {line.group(1)}: {reason.splitlines()[0]})" if line else ""
            return (
                f"{details.get('path', _config_file())} is not a valid AWS configuration file{where}: fix it "
                f"(sections like [profile NAME] of `key = value` lines), or rewrite it with `aws configure{flag}`"
            )
        case ConfigNotFound():
            path = details.get("path")
            return f"the AWS configuration file {path} does not exist: create it with `aws configure{flag}`"
        case SSOError() | TokenRetrievalError():
            return f"the AWS SSO sign-in{of_profile} is missing or has expired ({error}): run `aws sso login{flag}`"
        case NoCredentialsError():
            return (
                f"no AWS credentials found{of_profile}: run `aws configure{flag}` or `aws sso login{flag}` "
                f"(or set AWS_PROFILE); {GITHUB_ACTIONS_HINT}"
            )
        case PartialCredentialsError():
            return (
                f"incomplete AWS credentials{of_profile} in {details.get('provider')}: "
                f"{details.get('cred_var')} is missing; complete them with `aws configure{flag}`"
            )
        case CredentialRetrievalError():
            reason = str(details.get("error_msg") or "").strip() or "no reason given"
            return (
                f"the AWS credentials{of_profile} could not be obtained from {details.get('provider')} ({reason}): "
                f"check the profile in {_config_file()}, or sign in again (`aws sso login{flag}`)"
            )
        case RefreshWithMFAUnsupportedError():
            return f"the AWS credentials{of_profile} need a new MFA code: run the command again in a terminal"
        case InvalidConfigError():
            return f"the AWS configuration{of_profile} is invalid ({error}): fix it in {_config_file()}"
    return None
