"""Test-only AWS for the scripts' subprocesses: tests/ci/test_scripts.py puts this directory on
PYTHONPATH, so Python imports it at start-up and every boto3 call of that process goes to moto.

FAKE_CDK_BOOTSTRAP_VERSION=N creates the bootstrap version parameter (a bootstrapped account);
without it the account is not bootstrapped.
"""

import os

try:
    import boto3
    from moto import mock_aws
except ModuleNotFoundError:  # another interpreter (scripts/setup.sh probing for Python): leave it alone
    boto3 = None

if boto3 is not None:
    mock_aws().start()
if boto3 is not None and (version := os.environ.get("FAKE_CDK_BOOTSTRAP_VERSION")):
    boto3.client("ssm", region_name=os.environ["AWS_REGION"]).put_parameter(
        Name="/cdk-bootstrap/hnb659fds/version", Value=version, Type="String"
    )
