"""`scripts/deploy.sh`, `scripts/diff.sh` and `scripts/destroy.sh`: one environment's stack through
the pinned CDK CLI, the same command on a laptop and in GitHub Actions.

Each checks what it can before AWS is touched (the environment's name, production's --force), then
credentials, region and CDK bootstrap (stacks/cli/aws_preflight.py), runs `cdk`, and reports: the
outputs and migration summary of a deploy, the migrations and resource changes of a diff. In
GitHub Actions the report also goes to the job summary ($GITHUB_STEP_SUMMARY).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from stacks.cli import aws_preflight, cdk_report
from stacks.settings import ENVIRONMENTS, EnvironmentSettings, Flavour, Removal, SettingsError, apply_context

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "node_modules" / ".bin"


class CommandError(Exception):
    """A one-line reason to stop, and the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        raise CommandError(f"{message} (usage: {self.format_usage().strip().removeprefix('usage: ')})", 2)


def _parser(command: str) -> _Parser:
    parser = _Parser(prog=f"scripts/{command}.sh", description=__doc__)
    parser.add_argument("environment", help=f"one of {', '.join(ENVIRONMENTS)}")
    parser.add_argument(
        "-c",
        "--context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="CDK context passed to the app, e.g. -c database=rds-free (repeatable)",
    )
    if command == "deploy":
        parser.add_argument("--check", action="store_true", help="only check credentials, region and bootstrap")
    if command == "diff":
        parser.add_argument(
            "--change-set",
            action="store_true",
            help="diff through a CloudFormation change set (needs the deploy role) instead of templates",
        )
    if command == "destroy":
        parser.add_argument("--force", action="store_true", help="needed for production; skips cdk's question")
    return parser


def environment_settings(name: str) -> EnvironmentSettings:
    if name not in ENVIRONMENTS:
        raise CommandError(f"unknown environment {name!r}: allowed are {', '.join(ENVIRONMENTS)}", 2)
    return ENVIRONMENTS[name]


def is_protected(settings: EnvironmentSettings) -> bool:
    """Environments whose destroy needs --force: production (deletion protection, data kept on delete)."""
    return settings.deletion_protection or settings.removal is not Removal.DESTROY


def what_stays(settings: EnvironmentSettings) -> str:
    """What a destroy of ``settings``'s stack leaves behind (from its removal setting)."""
    if settings.removal is Removal.DESTROY:
        return "nothing stays: the database (no final snapshot), its secret and its log groups are deleted"
    if settings.removal is Removal.SNAPSHOT:
        return (
            f"what stays: a final snapshot of {settings.identifier}, the secret (the snapshot's password) and the "
            "log groups (database and VPC flow logs), until you delete them by hand"
        )
    return "what stays: the database itself (detached, still running and billed), its secret and its log groups"


def _cdk_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}"  # Node 22 for the CLI and for jsii
    env["JSII_NODE"] = str(NODE_BIN / "node")
    env.setdefault("CDK_DISABLE_VERSION_CHECK", "true")
    env.setdefault("CDK_DISABLE_CLI_TELEMETRY", "true")
    return env


def run_cdk(arguments: Sequence[str]) -> tuple[int, str]:
    """Runs the pinned CLI from the project root, echoing its output as it comes; returns (status, output)."""
    command = [str(NODE_BIN / "cdk"), *arguments]
    captured: list[str] = []
    with subprocess.Popen(
        command, cwd=ROOT, env=_cdk_environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            captured.append(line)
    return process.returncode, "".join(captured)


def write_job_summary(markdown: str) -> None:
    """Appends to the GitHub Actions job summary when running there; does nothing elsewhere."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if path:
        with open(path, "a", encoding="utf-8") as summary:
            summary.write(markdown + "\n")


def _context_arguments(pairs: Sequence[str]) -> list[str]:
    arguments = []
    for pair in pairs:
        if "=" not in pair:
            raise CommandError(f"-c {pair!r}: expected KEY=VALUE, e.g. -c database=rds-free", 2)
        arguments += ["-c", pair]
    return arguments


def deploy(settings: EnvironmentSettings, context: list[str]) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        outputs_file = Path(scratch) / "outputs.json"
        approval = "broadening" if sys.stdin.isatty() else "never"  # nobody can answer in CI
        status, log = run_cdk(
            [
                "deploy",
                settings.stack_name,
                "--require-approval",
                approval,
                "--progress",
                "events",
                "--outputs-file",
                str(outputs_file),
                "--no-notices",
                *context,
            ]
        )
        outputs: dict[str, str] = {}
        if outputs_file.exists():
            outputs = {k: str(v) for k, v in json.loads(outputs_file.read_text()).get(settings.stack_name, {}).items()}
    failure = cdk_report.migration_failure(log)
    write_job_summary(cdk_report.deploy_markdown(settings.name, settings.stack_name, outputs, failure, status == 0))
    if status != 0:
        if failure is not None:
            raise CommandError(f"migration failed: {failure.one_line()}", status)
        raise CommandError(f"cdk deploy {settings.stack_name} failed (exit {status}); see the events above", status)
    print(cdk_report.deploy_text(outputs))
    return 0


def diff(settings: EnvironmentSettings, context: list[str], change_set: bool) -> int:
    method = "change-set" if change_set else "template"  # template: the read-only lookup role suffices
    status, log = run_cdk(["diff", settings.stack_name, "--method", method, "--no-notices", *context])
    if status != 0:
        raise CommandError(f"cdk diff {settings.stack_name} failed (exit {status}); see above", status)
    from database.migrator.discovery import discover  # only a diff needs the local files

    versions = [migration.version for migration in discover(ROOT / "database" / "migrations")]
    report = cdk_report.parse_diff(log)
    write_job_summary(cdk_report.diff_markdown(settings.name, settings.stack_name, report, versions))
    print(cdk_report.diff_text(settings.name, report, versions))
    return 0


def destroy(settings: EnvironmentSettings, context: list[str], force: bool) -> int:
    print(f"destroy: {settings.stack_name}: {what_stays(settings)}")
    if settings.deletion_protection:
        print(
            "destroy: this stack has termination and deletion protection: first deploy with "
            "deletion_protection=False in stacks/settings.py and turn termination protection off "
            "(docs/deploy-time-migrations.md, Destroying)"
        )
    confirm = ["--force"] if force or not sys.stdin.isatty() else []
    status, _ = run_cdk(["destroy", settings.stack_name, *confirm, "--no-notices", *context])
    if status != 0:
        raise CommandError(f"cdk destroy {settings.stack_name} failed (exit {status}); see above", status)
    return 0


def _with_context(settings: EnvironmentSettings, pairs: Sequence[str]) -> EnvironmentSettings:
    """``settings`` with the command line's -c overrides, as the app will see them."""
    context = dict(pair.split("=", 1) for pair in pairs)
    try:
        resolved = apply_context(context)
    except SettingsError as error:
        raise CommandError(str(error), 2) from None
    return next(env for env in resolved if env.name == settings.name)


def rehearse_first(settings: EnvironmentSettings) -> None:
    """Where the environment requires it (RehearsalSettings.required), rehearse the checkout's
    migrations on a clone of its cluster and stop, before anything changes, when one fails or
    exceeds a budget. Nothing to rehearse on a first deploy (no cluster yet) or when the deployed
    migrations are the checkout's; rds-free has no clone: said, and the deploy goes on."""
    if not settings.rehearsal.required:
        return
    from database.cli.deployed import DeployedEnvironmentError, StackNotDeployedError
    from database.rehearsal.measure import Budgets
    from stacks.cli import rehearse
    from stacks.rehearsal.clone import CloneError

    if settings.flavour is Flavour.RDS_FREE:
        note = (f"{settings.name} requires a rehearsal, but {Flavour.RDS_FREE} has no copy-on-write clone: deploying "
                "with the lint gate only (rehearse on a local copy: docs/rehearsal.md#rds-free)")  # fmt: skip
        print(f"⚠️  {note}", flush=True)
        write_job_summary(f"### Rehearsal\n\n⚠️ {note}\n")
        return
    budgets = Budgets(settings.rehearsal.max_lock_seconds, settings.rehearsal.max_duration_seconds)
    print(f"rehearse: {settings.name} requires a rehearsal before a deploy that changes its migrations", flush=True)
    try:
        outcome = rehearse.rehearse_environment(settings, budgets, sys.stdout)
    except StackNotDeployedError:
        print(f"rehearse: {settings.stack_name} is not deployed yet: nothing to rehearse on", flush=True)
        return
    except DeployedEnvironmentError as error:
        raise CommandError(f"rehearsal: {error}; nothing was deployed", 3) from None
    except (rehearse.RehearsalRefused, CloneError) as error:
        raise CommandError(f"rehearsal: {error}; nothing was deployed", 1) from None
    rehearse.report(outcome, budgets, sys.stdout, as_json=False)
    write_job_summary(rehearse.summary_markdown(outcome, budgets))
    if outcome.exit_code != 0:
        raise CommandError(
            f"the rehearsal on a clone of {settings.name} failed or exceeded a budget (report above); nothing was "
            "deployed. Fix the migration, or change the budget in stacks/settings.py (RehearsalSettings)",
            1,
        )


def run(command: str, argv: Sequence[str]) -> int:
    args = _parser(command).parse_args(argv)
    settings = environment_settings(args.environment)
    context = _context_arguments(args.context)
    if command == "destroy" and is_protected(settings) and not args.force:
        raise CommandError(f"refusing to destroy {settings.name} without --force ({what_stays(settings)})", 2)
    try:
        target = aws_preflight.check()
    except aws_preflight.PreflightError as error:
        raise CommandError(str(error)) from None
    print(f"{command}: {settings.stack_name} in {target.describe()}", flush=True)
    if command == "deploy":
        if args.check:
            return 0
        rehearse_first(_with_context(settings, args.context))
        return deploy(settings, context)
    if command == "diff":
        return diff(settings, context, args.change_set)
    return destroy(settings, context, args.force)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in ("deploy", "diff", "destroy"):
        print("usage: python -m stacks.cli.cdk_commands deploy|diff|destroy ENVIRONMENT ...", file=sys.stderr)
        return 2
    command = arguments[0]
    try:
        return run(command, arguments[1:])
    except CommandError as error:
        print(f"{command}: {error}", file=sys.stderr)
        return error.status


if __name__ == "__main__":
    sys.exit(main())
