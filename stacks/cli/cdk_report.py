"""Reads what the CDK CLI printed (a deploy's failure, a diff's changes) and renders short reports.

The same report goes to the terminal (plain lines) and, in GitHub Actions, to the job summary
(markdown tables in $GITHUB_STEP_SUMMARY).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# The deploy-time runner's failure, as CloudFormation relays it ("... Message returned: <this>").
_MIGRATION_FAILURE = re.compile(
    r"(?P<file>[\w./-]+\.sql):(?P<line>\d+): (?P<version>\S+) failed: SQLSTATE (?P<sqlstate>[0-9A-Z]{5}): "
    r"(?P<message>.*?)(?=\s*\(RequestId:|\s*$)"
)
# A resource line of `cdk diff`: "[~] AWS::RDS::DBCluster Database/Cluster DatabaseCluster5B53A178 replace".
_RESOURCE = re.compile(r"^\[(?P<op>[-+~])\] (?P<type>(?:AWS|Custom)::\S+) (?P<rest>.*)$")
_IMPACTS = ("may be replaced", "replace", "destroy", "orphan", "import")
# A property of the resource above: " └─ [~] Migrations".
_PROPERTY = re.compile(r"^ [└├]─ \[[-+~]\] (?P<name>\S+)")
_ADDED_KEY = re.compile(r"\[\+\] Added: \.(?P<key>\S+)")
_CHANGED_KEY = re.compile(r"\[~\] \.(?P<key>\S+):")
MIGRATIONS_PROPERTY = "Migrations"  # the deploy-time resource's map of version -> digest

_OPERATIONS = {"+": "add", "-": "remove", "~": "modify"}


def strip_colors(text: str) -> str:
    return _ANSI.sub("", text)


@dataclass(frozen=True)
class MigrationFailure:
    file: str
    line: int
    version: str
    sqlstate: str
    message: str

    def one_line(self) -> str:
        return f"{self.file}:{self.line}: {self.version} failed: SQLSTATE {self.sqlstate}: {self.message}"


def migration_failure(log: str) -> MigrationFailure | None:
    """The first migration failure the deploy output reports, if any."""
    for line in strip_colors(log).splitlines():
        match = _MIGRATION_FAILURE.search(line)
        if match:
            return MigrationFailure(
                file=match["file"],
                line=int(match["line"]),
                version=match["version"],
                sqlstate=match["sqlstate"],
                message=match["message"].strip(),
            )
    return None


@dataclass(frozen=True)
class ResourceChange:
    operation: str  # add, remove, modify
    resource_type: str
    name: str  # construct path and logical id, as the CLI prints them
    impact: str  # replace, may be replaced, destroy, orphan, or ""


@dataclass
class DiffReport:
    resources: list[ResourceChange] = field(default_factory=list)
    migrations_added: list[str] = field(default_factory=list)  # versions the deploy will apply
    migrations_edited: list[str] = field(default_factory=list)  # applied versions whose file changed
    migration_resource_added: bool = False  # a first deploy: every migration runs


def parse_diff(log: str) -> DiffReport:
    """Resource changes and the migration changes under the deploy-time resource's `Migrations`."""
    report = DiffReport()
    in_migrations = False
    for line in strip_colors(log).splitlines():
        resource = _RESOURCE.match(line)
        if resource:
            rest = resource["rest"].strip()
            impact = next((i for i in _IMPACTS if rest.endswith(f" {i}")), "")
            name = rest[: -len(impact) - 1] if impact else rest
            change = ResourceChange(_OPERATIONS[resource["op"]], resource["type"], name, impact)
            report.resources.append(change)
            in_migrations = False
            if change.operation == "add" and "SchemaMigration" in name:
                report.migration_resource_added = True
            continue
        prop = _PROPERTY.match(line)
        if prop:
            in_migrations = prop["name"] == MIGRATIONS_PROPERTY
            continue
        if not in_migrations:
            continue
        if added := _ADDED_KEY.search(line):
            report.migrations_added.append(added["key"])
        elif changed := _CHANGED_KEY.search(line):
            report.migrations_edited.append(changed["key"])
        # "[-] Removed: .NNN" is an old file leaving the manifest's window of newest files: nothing runs.
    return report


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return lines


def deploy_markdown(
    environment: str,
    stack: str,
    outputs: Mapping[str, str],
    failure: MigrationFailure | None,
    succeeded: bool,
) -> str:
    """The deploy job's summary: migrations and schema version, then every stack output."""
    lines = [f"## Deploy of {environment} ({stack}): {'succeeded' if succeeded else 'FAILED'}", ""]
    if failure is not None:
        lines += ["### Migration failed", ""]
        lines += _table(
            ("file", "line", "SQLSTATE", "error"),
            [(f"`{failure.file}`", str(failure.line), failure.sqlstate, failure.message)],
        )
        lines += ["", "Nothing of the failed migration was applied; the stack rolled back.", ""]
    if outputs:
        lines += ["### Migrations", ""]
        lines += _table(
            ("applied by this deploy", "schema version"),
            [(outputs.get("MigrationsApplied", "(no output)"), outputs.get("SchemaVersion", "(no output)"))],
        )
        lines += ["", "### Stack outputs", ""]
        lines += _table(("output", "value"), sorted(outputs.items()))
    elif succeeded:
        lines += ["(the stack has no outputs)"]
    return "\n".join(lines) + "\n"


def deploy_text(outputs: Mapping[str, str]) -> str:
    """Terminal lines: the migration summary first, then each output."""
    lines = [
        f"migrations applied by this deploy: {outputs.get('MigrationsApplied', '(no output)')}",
        f"schema version: {outputs.get('SchemaVersion', '(no output)')}",
        "outputs:",
    ]
    lines += [f"  {key} = {value}" for key, value in sorted(outputs.items())]
    return "\n".join(lines)


def diff_markdown(environment: str, stack: str, report: DiffReport, all_migrations: Sequence[str]) -> str:
    """What deploying this revision would do to ``environment``: migrations, then resources."""
    lines = [f"## What a deploy would do to {environment} ({stack})", "", "### Migrations it would run", ""]
    lines += [f"- {item}" for item in diff_migration_lines(report, all_migrations)]
    lines += ["", "### Infrastructure changes", ""]
    if report.resources:
        lines += _table(
            ("change", "type", "resource", "impact"),
            [(c.operation, c.resource_type, c.name, c.impact or "-") for c in report.resources],
        )
    else:
        lines += ["none"]
    return "\n".join(lines) + "\n"


def diff_migration_lines(report: DiffReport, all_migrations: Sequence[str]) -> list[str]:
    if report.migration_resource_added:
        return [f"`{version}` (first deploy: every migration runs)" for version in all_migrations] or ["none"]
    lines = [f"`{version}`" for version in report.migrations_added]
    lines += [
        f"`{version}`: file EDITED after it was applied (the runner refuses drift; add a new migration instead)"
        for version in report.migrations_edited
    ]
    return lines or ["none"]


def diff_text(environment: str, report: DiffReport, all_migrations: Sequence[str]) -> str:
    lines = [f"summary for {environment}:", "  migrations a deploy would run:"]
    lines += [f"    {line.replace('`', '')}" for line in diff_migration_lines(report, all_migrations)]
    lines.append(f"  infrastructure changes: {len(report.resources) or 'none'}")
    lines += [
        f"    {c.operation} {c.resource_type} {c.name}" + (f" ({c.impact})" if c.impact else "")
        for c in report.resources
    ]
    return "\n".join(lines)
