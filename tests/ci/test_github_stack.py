"""The GitHub deploy-access stack: who may assume its roles, and what the roles may do."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aws_cdk import App, Stack
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks
from cfnlint.api import lint

from stacks.application import create_stacks
from stacks.github import GITHUB_CONTEXT_KEYS, GITHUB_STACK_NAME, github_settings_from_context
from stacks.github.settings import DEPLOY_BRANCHES
from stacks.settings import ENVIRONMENTS, ContextError
from tests.infra.helpers import only, resources

from .conftest import cdk_json_context

REPOSITORY = "octo-org/users-api"
EXISTING_PROVIDER = "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
AUD = "token.actions.githubusercontent.com:aud"
SUB = "token.actions.githubusercontent.com:sub"


def synth_github(**context: str) -> tuple[App, dict[str, Any]]:
    app = App(context={**cdk_json_context(), "github_repository": REPOSITORY, **context})
    create_stacks(app)
    stack = app.node.find_child(GITHUB_STACK_NAME)
    assert isinstance(stack, Stack)
    return app, dict(Template.from_stack(stack).to_json())


@pytest.fixture(scope="module")
def new_provider() -> tuple[App, dict[str, Any]]:
    return synth_github()


@pytest.fixture(scope="module")
def existing_provider() -> tuple[App, dict[str, Any]]:
    return synth_github(github_oidc_provider_arn=EXISTING_PROVIDER, github_deploy_trust="branch")


def role(template: dict[str, Any], prefix: str) -> tuple[str, dict[str, Any]]:
    [(logical_id, found)] = [(k, v) for k, v in resources(template, "AWS::IAM::Role").items() if k.startswith(prefix)]
    return logical_id, found


def policy_of(template: dict[str, Any], role_id: str) -> list[dict[str, Any]]:
    statements = []
    for policy in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements += policy["Properties"]["PolicyDocument"]["Statement"]
    return statements


def assumable_arns(statements: list[dict[str, Any]]) -> list[str]:
    """The bootstrap role names a policy allows, rendered from their Fn::Join parts."""
    assert [s["Action"] for s in statements] == ["sts:AssumeRole"], statements
    assert all(s["Effect"] == "Allow" for s in statements)
    rendered = []
    for statement in statements:
        arns = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for arn in arns:
            parts = arn["Fn::Join"][1]
            rendered.append("".join(p if isinstance(p, str) else "{" + next(iter(p.values())) + "}" for p in parts))
    return sorted(rendered)


def bootstrap_arn(kind: str) -> str:
    return (
        f"arn:{{AWS::Partition}}:iam::{{AWS::AccountId}}:role/cdk-hnb659fds-{kind}-role-"
        "{AWS::AccountId}-{AWS::Region}"
    )


def trust(role_resource: dict[str, Any]) -> dict[str, Any]:
    [statement] = role_resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Effect"] == "Allow"
    return dict(statement)


def test_the_stack_exists_only_with_github_repository() -> None:
    app = App(context=cdk_json_context())
    create_stacks(app)
    assert app.node.try_find_child(GITHUB_STACK_NAME) is None


def test_a_new_provider_for_github_with_the_sts_audience(new_provider: tuple[App, dict[str, Any]]) -> None:
    _, template = new_provider
    _, provider = only(template, "AWS::IAM::OIDCProvider")
    assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]
    provider_id = next(iter(resources(template, "AWS::IAM::OIDCProvider")))
    for prefix in ("DeployRole", "PullRequestRole"):
        _, found = role(template, prefix)
        assert trust(found)["Principal"] == {"Federated": {"Ref": provider_id}}  # Ref of the provider is its ARN


def test_deploy_role_trusts_only_the_repositorys_environments(new_provider: tuple[App, dict[str, Any]]) -> None:
    _, template = new_provider
    _, found = role(template, "DeployRole")
    assert trust(found)["Condition"] == {
        "StringEquals": {
            AUD: "sts.amazonaws.com",
            SUB: [f"repo:{REPOSITORY}:environment:testing", f"repo:{REPOSITORY}:environment:production"],
        }
    }


def test_pull_request_role_trusts_only_the_repositorys_pull_requests(
    new_provider: tuple[App, dict[str, Any]],
) -> None:
    _, template = new_provider
    _, found = role(template, "PullRequestRole")
    assert trust(found)["Condition"] == {
        "StringEquals": {AUD: "sts.amazonaws.com", SUB: [f"repo:{REPOSITORY}:pull_request"]}
    }


@pytest.mark.parametrize("variant", ["new_provider", "existing_provider"])
def test_deploy_role_assumes_only_the_bootstrap_roles_and_holds_the_rehearsal_policy(
    variant: str, request: pytest.FixtureRequest
) -> None:
    _, template = request.getfixturevalue(variant)
    role_id, found = role(template, "DeployRole")
    assert "Policies" not in found["Properties"]
    [(policy_id, _)] = resources(template, "AWS::IAM::ManagedPolicy").items()
    assert found["Properties"]["ManagedPolicyArns"] == [{"Ref": policy_id}]
    assert assumable_arns(policy_of(template, role_id)) == sorted(
        bootstrap_arn(kind) for kind in ("deploy", "file-publishing", "image-publishing", "lookup")
    )


def rendered(value: Any) -> list[str]:
    """Resource ARNs with their pseudo-parameters as {AWS::...}."""
    values = value if isinstance(value, list) else [value]
    out = []
    for item in values:
        if isinstance(item, str):
            out.append(item)
        else:
            parts = item["Fn::Join"][1]
            out.append("".join(p if isinstance(p, str) else "{" + next(iter(p.values())) + "}" for p in parts))
    return sorted(out)


def test_the_rehearsal_policy_creates_and_deletes_only_tagged_clones(new_provider: tuple[App, dict[str, Any]]) -> None:
    _, template = new_provider
    [policy] = resources(template, "AWS::IAM::ManagedPolicy").values()
    statements = {s["Sid"]: s for s in policy["Properties"]["PolicyDocument"]["Statement"]}
    rds = "arn:{AWS::Partition}:rds:{AWS::Region}:{AWS::AccountId}"
    clones = [f"pg-schema-deploy-{name}-rehearsal-*" for name in ENVIRONMENTS]

    create = statements["CloneTheClusterTagged"]
    assert sorted(create["Action"]) == ["rds:AddTagsToResource", "rds:CreateDBInstance",
                                        "rds:RestoreDBClusterToPointInTime"]  # fmt: skip
    assert create["Condition"] == {
        "StringEquals": {"aws:RequestTag/pg-schema-deploy:rehearsal": list(ENVIRONMENTS)},
        "ForAllValues:StringEquals": {"aws:TagKeys": ["pg-schema-deploy:rehearsal"]},
    }
    assert rendered(create["Resource"]) == sorted(
        [f"{rds}:cluster:pg-schema-deploy-{name}" for name in ENVIRONMENTS]
        + [f"{rds}:{kind}:{clone}" for kind in ("cluster", "db") for clone in clones]
        + [f"{rds}:{kind}:*" for kind in ("subgrp", "cluster-pg", "pg")]
    )
    delete = statements["DeleteOnlyTaggedClones"]
    assert sorted(delete["Action"]) == ["rds:DeleteDBCluster", "rds:DeleteDBInstance"]
    assert delete["Condition"] == {"Null": {"aws:ResourceTag/pg-schema-deploy:rehearsal": "false"}}
    clone_arns = sorted(f"{rds}:{kind}:{clone}" for kind in ("cluster", "db") for clone in clones)
    assert rendered(delete["Resource"]) == clone_arns
    # Nothing that changes or deletes a database is allowed on any other resource.
    for sid, statement in statements.items():
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if sid not in ("CloneTheClusterTagged", "DeleteOnlyTaggedClones"):
            assert all(action.split(":")[1].startswith(("Describe", "Invoke")) for action in actions), sid
    assert rendered(statements["InvokeTheMigrationFunction"]["Resource"]) == sorted(
        f"arn:{{AWS::Partition}}:lambda:{{AWS::Region}}:{{AWS::AccountId}}:function:pg-schema-deploy-{name}-migrate"
        for name in ENVIRONMENTS
    )


@pytest.mark.parametrize("variant", ["new_provider", "existing_provider"])
def test_pull_request_role_may_only_assume_the_lookup_role(variant: str, request: pytest.FixtureRequest) -> None:
    _, template = request.getfixturevalue(variant)
    role_id, found = role(template, "PullRequestRole")
    assert "ManagedPolicyArns" not in found["Properties"] and "Policies" not in found["Properties"]
    assert assumable_arns(policy_of(template, role_id)) == [bootstrap_arn("lookup")]


def test_existing_provider_is_reused_and_branch_trust_names_the_deploy_branches(
    existing_provider: tuple[App, dict[str, Any]],
) -> None:
    _, template = existing_provider
    assert not resources(template, "AWS::IAM::OIDCProvider")
    _, found = role(template, "DeployRole")
    statement = trust(found)
    assert statement["Principal"] == {"Federated": EXISTING_PROVIDER}
    assert statement["Condition"]["StringEquals"] == {
        AUD: "sts.amazonaws.com",
        SUB: [f"repo:{REPOSITORY}:ref:refs/heads/main", f"repo:{REPOSITORY}:ref:refs/heads/production"],
    }
    assert template["Outputs"]["OidcProviderArn"]["Value"] == EXISTING_PROVIDER


def test_a_custom_bootstrap_qualifier_names_its_roles() -> None:
    _, template = synth_github(cdk_bootstrap_qualifier="teamdb")
    role_id, _ = role(template, "PullRequestRole")
    assert assumable_arns(policy_of(template, role_id)) == [bootstrap_arn("lookup").replace("hnb659fds", "teamdb")]


def test_no_trust_policy_names_another_repository(new_provider: tuple[App, dict[str, Any]]) -> None:
    _, template = new_provider
    text = json.dumps(
        [r["Properties"]["AssumeRolePolicyDocument"] for r in resources(template, "AWS::IAM::Role").values()]
    )
    assert text.count("repo:") == text.count(f"repo:{REPOSITORY}:") == 3
    assert "*" not in text


@pytest.mark.parametrize("variant", ["new_provider", "existing_provider"])
def test_cdk_nag_and_cfn_lint_are_clean(variant: str, request: pytest.FixtureRequest) -> None:
    app, template = request.getfixturevalue(variant)
    report = AwsSolutionsChecks().validate_scope(app)
    assert report.success, [(v.rule_name, [r.construct_path for r in v.violating_resources]) for v in report.violations]
    matches = lint(json.dumps(template), regions=["us-east-1", "eu-west-1"])
    assert not matches, "\n".join(str(match) for match in matches)


def test_outputs_name_the_role_arns(new_provider: tuple[App, dict[str, Any]]) -> None:
    _, template = new_provider
    assert set(template["Outputs"]) == {"DeployRoleArn", "PullRequestRoleArn", "OidcProviderArn"}


def test_deploy_branches_cover_every_environment() -> None:
    assert set(DEPLOY_BRANCHES) == set(ENVIRONMENTS)


@pytest.mark.parametrize(
    ("context", "message"),
    [
        ({"github_repository": "users-api"}, "expected OWNER/REPO"),
        ({"github_repository": "octo/users", "github_deploy_trust": "tag"}, "allowed values are environment, branch"),
        (
            {"github_repository": "octo/users", "github_oidc_provider_arn": "arn:aws:iam::1:oidc-provider/x"},
            "expected arn:aws:iam::",
        ),
        ({"github_repository": "octo/users", "cdk_bootstrap_qualifier": "way-too-long-qualifier"}, "1-10 letters"),
        ({"github_deploy_trust": "branch"}, "needs github_repository=OWNER/REPO"),
    ],
)
def test_bad_context_values_are_one_clear_line(context: dict[str, str], message: str) -> None:
    with pytest.raises(ContextError, match=message) as raised:
        github_settings_from_context(context)
    assert "\n" not in str(raised.value)


def test_context_keys_are_exposed_for_the_unknown_key_check() -> None:
    assert GITHUB_CONTEXT_KEYS == (
        "github_repository",
        "github_oidc_provider_arn",
        "github_deploy_trust",
        "cdk_bootstrap_qualifier",
    )
