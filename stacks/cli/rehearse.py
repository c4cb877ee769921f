"""`scripts/rehearse.sh ENVIRONMENT`: the checkout's pending migrations rehearsed on a copy-on-write
clone of the environment's Aurora cluster, measured, judged against the environment's budgets, the
clone deleted. Also what scripts/deploy.sh runs first where the environment requires a rehearsal.

The migration function does the measuring, inside the VPC (database/rehearsal/measure.py); this side
makes the clone (stacks/rehearsal/clone.py), sends the checkout's migration files with squawk's
findings on them, and prints the report as `run-migrations.sh --rehearse` does locally.

Exit status: 0 within budgets (or nothing to rehearse); 1 over budget or a migration failed; 2 bad
arguments or refused (rds-free); 3 AWS could not be reached or refused; 130 interrupted (the clone
is deleted all the same).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO

from stacks.settings import ENVIRONMENTS, LAMBDA_MAX_TIMEOUT_SECONDS, EnvironmentSettings, Flavour, SettingsError

if TYPE_CHECKING:
    from database.cli.deployed import DeployedTarget
    from database.rehearsal.measure import Budgets, Rehearsal

ROOT = Path(__file__).resolve().parents[2]
MIGRATIONS_DIR = ROOT / "database" / "migrations"
IDENTIFIER_OUTPUT = "DatabaseIdentifier"
FLAVOUR_OUTPUT = "DatabaseFlavour"
# Lambda's synchronous payload limit is 6 MB; the request carries the files and their findings.
MAX_PAYLOAD_BYTES = 6_000_000
# The function answers within its own timeout (at most Lambda's 900 s); the read waits a bit longer.
READ_TIMEOUT_SECONDS = LAMBDA_MAX_TIMEOUT_SECONDS + 30


class RehearsalRefused(Exception):
    """A reason not to rehearse, with the exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Outcome:
    """What a rehearsal came to: skipped (nothing changed), or its report."""

    environment: str
    clone: str | None = None
    rehearsal: Rehearsal | None = None
    skipped: str | None = None  # why nothing was rehearsed

    @property
    def exit_code(self) -> int:
        from database.cli.rehearse import exit_code

        return 0 if self.rehearsal is None else exit_code(self.rehearsal)


def rehearse_environment(settings: EnvironmentSettings, budgets: Budgets, out: TextIO) -> Outcome:
    """Rehearse the checkout's migrations on a clone of ``settings``'s deployed cluster."""
    from database.cli.deployed import DeployedTarget
    from database.rehearsal.measure import Rehearsal
    from stacks.rehearsal.clone import ClusterCloner

    target = DeployedTarget.find(settings.name, label=settings.name)
    source = _cluster_of(target)
    files, report = _checkout()
    status = target.invoke({"action": "status"})
    if status.get("ok") and status.get("migrations_digest") == _digest():
        return Outcome(settings.name, skipped="the checkout's migrations are the ones deployed: nothing to rehearse")
    payload = {"action": "rehearse", "migrations": files, "lint_report": report, "budgets": _limits(budgets)}
    size = len(json.dumps(payload).encode())
    if size > MAX_PAYLOAD_BYTES:
        raise RehearsalRefused(
            f"the migration files come to {size:,} bytes with their findings, over Lambda's 6 MB request limit", 2
        )
    cloner = ClusterCloner(target.session.client("rds"), settings.name, source, out)
    with cloner.clone() as clone:
        print(f"📏 Rehearsing on {clone.cluster} through {target.function_name}", file=out, flush=True)
        request = {**payload, "clone_host": clone.endpoint, "clone_port": clone.port}
        answer = target.invoke(request, READ_TIMEOUT_SECONDS, retry=False)
    if not answer.get("ok") or not isinstance(answer.get("rehearsal"), dict):
        raise RehearsalRefused(f"{target.function_name}: {answer.get('error') or 'no rehearsal in its answer'}", 1)
    return Outcome(settings.name, clone.cluster, Rehearsal.from_document(answer["rehearsal"]))


def cleanup(settings: EnvironmentSettings, out: TextIO) -> list[str]:
    from database.cli.deployed import DeployedTarget
    from stacks.rehearsal.clone import ClusterCloner

    target = DeployedTarget.find(settings.name, label=settings.name)
    return ClusterCloner(target.session.client("rds"), settings.name, _cluster_of(target), out).cleanup()


def _cluster_of(target: DeployedTarget) -> str:
    flavour = target.outputs.get(FLAVOUR_OUTPUT)
    if flavour == Flavour.RDS_FREE:
        raise RehearsalRefused(
            f"{target.environment} runs {Flavour.RDS_FREE}: an RDS instance has no copy-on-write clone, and restoring "
            "its latest snapshot takes 20 minutes or more and bills a second instance meanwhile. Rehearse on a copy "
            "instead: restore a dump to the local database and run scripts/run-migrations.sh --environment local "
            "--rehearse (docs/rehearsal.md#rds-free)",
            2,
        )
    identifier = target.outputs.get(IDENTIFIER_OUTPUT)
    if not identifier:
        raise RehearsalRefused(
            f"stack {target.stack} has no {IDENTIFIER_OUTPUT} output: it was deployed before rehearsals existed; "
            f"deploy it once (scripts/deploy.sh {target.environment}), then rehearse",
            2,
        )
    return identifier


def _checkout() -> tuple[dict[str, str], dict[str, Any]]:
    """Every migration file of the checkout (the clone's own tracking decides what is pending) and
    squawk's findings on them, as synth ships them in the function's asset."""
    from database.lint.engine import lint_migrations
    from database.lint.gate import report_document
    from database.migrator.orchestration import load_migrations

    files = {path.name: path.read_bytes().decode("utf-8") for path in sorted(MIGRATIONS_DIR.glob("*.sql"))}
    linted = lint_migrations(load_migrations(MIGRATIONS_DIR), lambda path: f"database/migrations/{path.name}")
    return files, json.loads(report_document(linted))


def _digest() -> str:
    from database.migrator.manifest import build_manifest

    return build_manifest(MIGRATIONS_DIR).digest


def _limits(budgets: Budgets) -> dict[str, float]:
    return {"max_lock_seconds": budgets.max_lock_seconds, "max_duration_seconds": budgets.max_duration_seconds}


def summary_markdown(outcome: Outcome, budgets: Budgets) -> str:
    """The job summary's section: the verdict, then one row per migration."""
    title = f"### Rehearsal of the migrations on a clone of {outcome.environment}"
    if outcome.rehearsal is None:
        return f"{title}\n\n{outcome.skipped}\n"
    rehearsal = outcome.rehearsal
    verdict = (
        f"❌ failed: {rehearsal.failure}" if rehearsal.failure is not None
        else "✅ within budgets" if rehearsal.within_budgets else "❌ over budget"
    )  # fmt: skip
    lines = [
        title,
        "",
        f"{verdict} (clone {outcome.clone}; budgets: ACCESS EXCLUSIVE locks up to {budgets.max_lock_seconds:g} s, "
        f"migrations up to {budgets.max_duration_seconds:g} s)",
        "",
        "| migration | duration | locks held | rewrote | indexes built | over budget |",
        "|---|---|---|---|---|---|",
    ]
    for measure in rehearsal.migrations:
        locks = "<br>".join(f"{lock.mode} on {lock.table}: {lock.held_ms} ms" for lock in measure.locks) or "-"
        indexes = "<br>".join(f"{index['name']} ({index['bytes']:,} B)" for index in measure.indexes_built) or "-"
        lines.append(
            f"| {measure.version} | {measure.duration_ms} ms | {locks} | {', '.join(measure.rewritten) or '-'} | "
            f"{indexes} | {'<br>'.join(measure.over_budget) or '-'} |"
        )
    for finding in rehearsal.findings:
        lines.append(f"\n- lint {finding.severity}: `{finding.file}:{finding.line}` {finding.rule}: {finding.message}")
    return "\n".join(lines) + "\n"


def report(outcome: Outcome, budgets: Budgets, out: TextIO, *, as_json: bool) -> None:
    from database.cli.rehearse import print_report

    if as_json:
        document: dict[str, Any] = {
            "mode": "rehearse",
            "ok": outcome.exit_code == 0,
            "environment": outcome.environment,
            "clone": outcome.clone,
            "skipped": outcome.skipped,
        }
        if outcome.rehearsal is not None:
            document["rehearsal"] = outcome.rehearsal.document(budgets)
        print(json.dumps(document, indent=2), file=out)
    elif outcome.rehearsal is None:
        print(f"✅ {outcome.environment}: {outcome.skipped}", file=out)
    else:
        print_report(outcome.rehearsal, budgets, out)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise RehearsalRefused(f"{message} (usage: {self.format_usage().strip().removeprefix('usage: ')})", 2)


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds") from None
    if not 0 <= seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"{value!r}: expected 0 or more seconds")
    return seconds


def main(argv: list[str] | None = None) -> int:
    from database.cli.deployed import DeployedEnvironmentError
    from database.rehearsal.measure import Budgets
    from stacks.cli.cdk_commands import write_job_summary
    from stacks.rehearsal.clone import CloneError

    parser = _Parser(prog="scripts/rehearse.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("environment", help=f"one of {', '.join(ENVIRONMENTS)}")
    parser.add_argument("--max-lock", metavar="SECONDS", type=_seconds,
                        help="an ACCESS EXCLUSIVE lock held longer is over budget (default: the environment's)")
    parser.add_argument("--max-duration", metavar="SECONDS", type=_seconds,
                        help="a migration running longer is over budget (default: the environment's)")
    parser.add_argument("--json", action="store_true", help="print one machine-readable JSON document")
    parser.add_argument("--cleanup", action="store_true",
                        help="delete every rehearsal clone of ENVIRONMENT left by an interrupted run, and stop")
    out = sys.stderr  # progress lines; the report goes to stdout
    try:
        arguments = parser.parse_args(argv)
        if arguments.environment not in ENVIRONMENTS:
            raise RehearsalRefused(
                f"unknown environment {arguments.environment!r}: allowed are {', '.join(ENVIRONMENTS)}", 2
            )
        settings = ENVIRONMENTS[arguments.environment]
        if arguments.cleanup:
            cleanup(settings, out)
            return 0
        limits = settings.rehearsal
        budgets = Budgets(
            limits.max_lock_seconds if arguments.max_lock is None else arguments.max_lock,
            limits.max_duration_seconds if arguments.max_duration is None else arguments.max_duration,
        )
        outcome = rehearse_environment(settings, budgets, out)
    except RehearsalRefused as error:
        print(f"rehearse: {error}", file=sys.stderr)
        return error.status
    except (DeployedEnvironmentError, CloneError, SettingsError) as error:
        print(f"rehearse: {error}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("rehearse: interrupted; the clone was deleted (if one was left: --cleanup)", file=sys.stderr)
        return 130
    report(outcome, budgets, sys.stdout, as_json=arguments.json)
    write_job_summary(summary_markdown(outcome, budgets))
    return outcome.exit_code


if __name__ == "__main__":
    sys.exit(main())
