"""Checks that `cdk deploy|diff|destroy` can work before starting it: credentials, region, bootstrap.

Each failure is one line that says what to do. Only read calls are made: sts:GetCallerIdentity,
ssm:GetParameter on the bootstrap version and, when the caller may not read it (a GitHub Actions
role that may only assume the CDK bootstrap roles), sts:AssumeRole on those roles.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
from botocore.exceptions import BotoCoreError, ClientError

from database.cli.aws_setup import setup_problem

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_QUALIFIER = "hnb659fds"
# The synthesized templates' CheckBootstrapVersion rule rejects older bootstraps.
MINIMUM_BOOTSTRAP_VERSION = 6
# Bootstrap roles whose permissions include reading the bootstrap version parameter, in the order
# tried: a deploy role may assume the first, a pull-request role only the second.
VERSION_READER_ROLES = ("deploy", "lookup")


class PreflightError(Exception):
    """A reason the CDK command cannot work here; the message is one actionable line."""


@dataclass(frozen=True)
class AwsTarget:
    account: str
    region: str
    caller_arn: str
    qualifier: str
    bootstrap_version: int

    def describe(self) -> str:
        return (
            f"account {self.account}, region {self.region}, as {self.caller_arn}; "
            f"CDK bootstrap version {self.bootstrap_version} (qualifier {self.qualifier})"
        )


def bootstrap_qualifier(project_root: Path = ROOT) -> str:
    """The qualifier the stacks are synthesized with: cdk.json's `@aws-cdk/core:bootstrapQualifier`."""
    context = json.loads((project_root / "cdk.json").read_text()).get("context", {})
    return str(context.get("@aws-cdk/core:bootstrapQualifier", DEFAULT_QUALIFIER))


def bootstrap_command(account: str, region: str, qualifier: str) -> str:
    extra = "" if qualifier == DEFAULT_QUALIFIER else f" --qualifier {qualifier}"
    return f"npx cdk bootstrap aws://{account}/{region}{extra}"


def check(session: boto3.Session | None = None, qualifier: str | None = None) -> AwsTarget:
    """Who we are, where, and the bootstrap version there; raises PreflightError otherwise."""
    try:
        # AWS_REGION first, as the CDK CLI reads it (botocore alone reads only AWS_DEFAULT_REGION).
        session = session or boto3.Session(region_name=os.environ.get("AWS_REGION") or None)
        region = session.region_name
    except BotoCoreError as error:  # a missing profile or a malformed config file
        raise PreflightError(setup_problem(error) or str(error)) from None
    qualifier = qualifier or bootstrap_qualifier()
    if not region:
        raise PreflightError(
            "no AWS region: set AWS_REGION (or `region` in your AWS profile); "
            "in GitHub Actions pass aws-region to configure-aws-credentials"
        )
    account, caller_arn = _caller_identity(session, region)
    version = _bootstrap_version(session, account, region, qualifier)
    if version is None:
        raise PreflightError(
            f"account {account} is not CDK-bootstrapped in {region} (no SSM parameter "
            f"/cdk-bootstrap/{qualifier}/version): run `{bootstrap_command(account, region, qualifier)}` once"
        )
    if version < MINIMUM_BOOTSTRAP_VERSION:
        raise PreflightError(
            f"account {account} in {region} has CDK bootstrap version {version}, older than the "
            f"{MINIMUM_BOOTSTRAP_VERSION} the stacks need: run `{bootstrap_command(account, region, qualifier)}` again"
        )
    return AwsTarget(account, region, caller_arn, qualifier, version)


def _caller_identity(session: boto3.Session, region: str) -> tuple[str, str]:
    try:
        identity = session.client("sts", region_name=region).get_caller_identity()
    except ClientError as error:
        info = error.response.get("Error", {})
        raise PreflightError(
            f"AWS rejected the credentials ({info.get('Code', 'error')}: {info.get('Message', error)}): "
            "refresh them (`aws sso login`) or check AWS_PROFILE"
        ) from None
    except BotoCoreError as error:
        raise PreflightError(setup_problem(error) or f"cannot reach AWS STS in {region}: {error}") from None
    return str(identity["Account"]), str(identity["Arn"])


def _bootstrap_version(session: boto3.Session, account: str, region: str, qualifier: str) -> int | None:
    """The bootstrap version, None when the parameter does not exist; tries the caller first, then
    the bootstrap roles that can read it."""
    parameter = f"/cdk-bootstrap/{qualifier}/version"
    denied: list[str] = []
    for label, reader in _version_readers(session, account, region, qualifier, denied):
        try:
            value = reader.client("ssm", region_name=region).get_parameter(Name=parameter)["Parameter"]["Value"]
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            if code == "ParameterNotFound":
                return None
            denied.append(f"{label}: {code or error}")
            continue
        except BotoCoreError as error:
            raise PreflightError(f"cannot reach AWS SSM in {region}: {error}") from None
        return int(value)
    raise PreflightError(
        f"cannot read /cdk-bootstrap/{qualifier}/version in account {account}, {region} "
        f"({'; '.join(denied)}): if the account is not bootstrapped there, run "
        f"`{bootstrap_command(account, region, qualifier)}`; otherwise check the role's trust and the qualifier"
    )


def _version_readers(
    session: boto3.Session, account: str, region: str, qualifier: str, denied: list[str]
) -> Iterator[tuple[str, boto3.Session]]:
    """The caller's session, then sessions of the bootstrap roles, each assumed only when needed."""
    yield "caller", session
    sts = session.client("sts", region_name=region)
    partition = session.get_partition_for_region(region)
    for kind in VERSION_READER_ROLES:
        role = f"cdk-{qualifier}-{kind}-role-{account}-{region}"
        try:
            credentials = sts.assume_role(
                RoleArn=f"arn:{partition}:iam::{account}:role/{role}", RoleSessionName="pg-schema-deploy-preflight"
            )["Credentials"]
        except ClientError as error:
            denied.append(f"assume {role}: {error.response.get('Error', {}).get('Code', error)}")
            continue
        yield (
            role,
            boto3.Session(
                aws_access_key_id=credentials["AccessKeyId"],
                aws_secret_access_key=credentials["SecretAccessKey"],
                aws_session_token=credentials["SessionToken"],
                region_name=region,
            ),
        )
