"""Typed per-environment settings: the one place that says what each environment deploys.

Pure Python on purpose (no aws_cdk import): tools and tests read it without loading the CDK, and the
CDK constructs translate these plain values into CDK types themselves. The PostgreSQL version comes
from database/postgres_version.py, which the runner reads too.

Command-line overrides (``cdk synth -c KEY=VALUE``) are resolved by :func:`apply_context`; every key
also exists per environment as ``KEY.<environment>`` (for example ``-c database.testing=rds-free``),
which wins over the plain key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TypeVar

from database.access import APPLICATION_ROLE, READONLY_ROLE
from database.lint import DEFAULT_ERROR_ROWS
from database.postgres_version import POSTGRES_MAJOR_VERSION, POSTGRES_VERSION

# Re-exported: the stacks' settings name their engine and the logins' default names.
__all__ = ["APPLICATION_ROLE", "POSTGRES_MAJOR_VERSION", "POSTGRES_VERSION", "READONLY_ROLE"]


PROJECT_NAME = "PgSchemaDeploy"
DATABASE_USER = "webapp"
DATABASE_PORT = 5432
# The days between RDS's rotations of the master password, per environment in DatabaseAccess (as are
# the logins applications use, APPLICATION_ROLE and READONLY_ROLE by default).
MASTER_PASSWORD_ROTATION_DAYS = 7

# Instance classes the rds-free flavour accepts: the Single-AZ micro classes of the RDS free tier.
RDS_FREE_INSTANCE_CLASSES = ("db.t3.micro", "db.t4g.micro")

# Aurora PostgreSQL versions that can pause at 0 ACU, as (major, lowest minor); majors above the
# newest listed one all support it (AWS "Scaling to zero ACUs" docs; the same ranges aws-cdk-lib
# uses for its auto-pause check: >=16.3 || ^15.7 || ^14.12 || ^13.15).
_AURORA_AUTO_PAUSE_MINIMUM = {13: 15, 14: 12, 15: 7, 16: 3}
_AURORA_AUTO_PAUSE_ALL_MINORS_FROM_MAJOR = 17

AUTO_PAUSE_MIN_SECONDS = 300
AUTO_PAUSE_MAX_SECONDS = 86_400
MAX_ACU = 256.0
# Retention periods CloudWatch Logs accepts (the subset offered here).
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 180, 365)
# The deploy-time migration chain: each run of the runner function has its timeout, the deploy
# function 60 s more around it. Lambda stops any function at 900 s, so one run takes at most 840 s.
# A deploy chains runs (the Provider framework's is_complete polling) for up to total_timeout_seconds;
# CloudFormation waits at most 3600 s for a custom resource (ServiceTimeout's ceiling, also the
# framework's documented maximum), which must cover that, the first answer and the last one.
LAMBDA_MAX_TIMEOUT_SECONDS = 900
MIGRATION_CHAIN_MARGIN_SECONDS = 60
MIGRATION_MAX_TIMEOUT_SECONDS = LAMBDA_MAX_TIMEOUT_SECONDS - MIGRATION_CHAIN_MARGIN_SECONDS
CUSTOM_RESOURCE_MAX_SECONDS = 3600
MIGRATION_POLL_SECONDS = 10  # between two runs of one deploy
MIGRATION_MAX_TOTAL_SECONDS = (
    CUSTOM_RESOURCE_MAX_SECONDS - 2 * MIGRATION_CHAIN_MARGIN_SECONDS - 3 * MIGRATION_POLL_SECONDS
)


class SettingsError(ValueError):
    """A settings value that cannot be deployed."""


class ContextError(SettingsError):
    """A bad ``-c KEY=VALUE`` override on the cdk command line."""


class Flavour(StrEnum):
    """Which managed PostgreSQL an environment runs."""

    AURORA_SERVERLESS = "aurora-serverless"
    RDS_FREE = "rds-free"


class Removal(StrEnum):
    """What CloudFormation does with the database when the stack (or the resource) is deleted."""

    DESTROY = "destroy"  # delete it, no final snapshot: testing
    SNAPSHOT = "snapshot"  # delete it after a final snapshot
    RETAIN = "retain"  # keep it running, detached from the stack


class SchemaDriftPolicy(StrEnum):
    """What a deploy does when the live schema differs from the one the last apply recorded
    (changed outside migrations), before it applies anything."""

    REPORT = "report"  # names the changes in the deploy's output, then applies
    FAIL = "fail"  # names them and fails the deploy; nothing is applied


def parse_version(version: str) -> tuple[int, int]:
    """``"17.9"`` -> ``(17, 9)``. Raises SettingsError for anything that is not MAJOR.MINOR."""
    match = re.fullmatch(r"(\d+)\.(\d+)", version)
    if not match:
        raise SettingsError(f"PostgreSQL version {version!r} is not of the form MAJOR.MINOR (e.g. '17.9')")
    return int(match.group(1)), int(match.group(2))


def aurora_supports_scale_to_zero(version: str) -> bool:
    """Whether Aurora PostgreSQL ``version`` accepts a minimum capacity of 0 ACU (auto-pause)."""
    major, minor = parse_version(version)
    if major >= _AURORA_AUTO_PAUSE_ALL_MINORS_FROM_MAJOR:
        return True
    lowest = _AURORA_AUTO_PAUSE_MINIMUM.get(major)
    return lowest is not None and minor >= lowest


@dataclass(frozen=True)
class AuroraCapacity:
    """Aurora Serverless v2 capacity range, in ACU (1 ACU is about 2 GiB of memory)."""

    min_acu: float
    max_acu: float
    # Seconds without connections before a 0-ACU cluster pauses; only with min_acu == 0.
    auto_pause_seconds: int | None = None

    def __post_init__(self) -> None:
        for name, value in (("min_acu", self.min_acu), ("max_acu", self.max_acu)):
            if not 0 <= value <= MAX_ACU or (value * 2) != int(value * 2):
                raise SettingsError(f"Aurora {name}={value}: must be 0 to {MAX_ACU} in steps of 0.5")
        if self.max_acu < max(self.min_acu, 1):
            raise SettingsError(
                f"Aurora max_acu={self.max_acu}: must be at least 1 and at least min_acu={self.min_acu}"
            )
        if self.min_acu == 0:
            if self.auto_pause_seconds is None:
                raise SettingsError("Aurora min_acu=0 (scale to zero) needs auto_pause_seconds")
            if not AUTO_PAUSE_MIN_SECONDS <= self.auto_pause_seconds <= AUTO_PAUSE_MAX_SECONDS:
                raise SettingsError(
                    f"Aurora auto_pause_seconds={self.auto_pause_seconds}: must be "
                    f"{AUTO_PAUSE_MIN_SECONDS} to {AUTO_PAUSE_MAX_SECONDS}"
                )
        elif self.auto_pause_seconds is not None:
            raise SettingsError(
                f"Aurora auto_pause_seconds={self.auto_pause_seconds} only applies with min_acu=0 "
                f"(min_acu is {self.min_acu})"
            )

    @property
    def scales_to_zero(self) -> bool:
        return self.min_acu == 0


@dataclass(frozen=True)
class RdsInstance:
    """RDS for PostgreSQL instance size (the rds-free flavour)."""

    instance_class: str = "db.t3.micro"
    allocated_storage_gib: int = 20  # the free tier's 20 GB; storage never autoscales past it

    def __post_init__(self) -> None:
        if self.instance_class not in RDS_FREE_INSTANCE_CLASSES:
            raise SettingsError(
                f"RDS instance_class={self.instance_class!r}: allowed values are {', '.join(RDS_FREE_INSTANCE_CLASSES)}"
            )
        if not 20 <= self.allocated_storage_gib <= 6144:
            raise SettingsError(f"RDS allocated_storage_gib={self.allocated_storage_gib}: must be 20 to 6144")

    @property
    def cdk_instance_type(self) -> str:
        """The class without the ``db.`` prefix, as ``ec2.InstanceType`` wants it (``t3.micro``)."""
        return self.instance_class.removeprefix("db.")


@dataclass(frozen=True)
class NetworkSettings:
    """The VPC: a new one (default) or an existing one looked up by id."""

    vpc_id: str | None = None  # existing VPC (needs CDK_DEFAULT_ACCOUNT/REGION and a context lookup)
    cidr: str = "10.40.0.0/16"  # each environment its own range, so that they can be peered or joined
    max_azs: int = 2  # a DB subnet group needs subnets in two AZs, also for Single-AZ databases
    nat_gateways: int = 0  # NAT costs about $33/month each; the database needs none

    def __post_init__(self) -> None:
        if self.vpc_id is not None and not re.fullmatch(r"vpc-[0-9a-f]{8}([0-9a-f]{9})?", self.vpc_id):
            raise SettingsError(f"vpc_id={self.vpc_id!r} is not a VPC id (vpc-0123456789abcdef0)")
        if self.max_azs < 2:
            raise SettingsError(f"max_azs={self.max_azs}: RDS subnet groups need at least 2 AZs")
        if not 0 <= self.nat_gateways <= self.max_azs:
            raise SettingsError(f"nat_gateways={self.nat_gateways}: must be 0 to max_azs={self.max_azs}")


@dataclass(frozen=True)
class MigrationSettings:
    """The deploy-time schema migration (a custom resource and two Lambda functions)."""

    # Longest one run of the runner function may take; it stops between files before it, and the
    # deploy starts another run, until total_timeout_seconds.
    timeout_seconds: int = 600
    # Longest a deploy may spend applying migrations, across runs; what is pending then fails the
    # deploy ("deploy again to continue"), what was applied stays.
    total_timeout_seconds: int = 1800
    memory_mb: int = 512
    # Adds a Secrets Manager interface endpoint (about $7.30 per AZ-month) so the in-VPC runner reads
    # the secret itself; off, the out-of-VPC deploy function reads it and hands it over ($0).
    secrets_manager_endpoint: bool = False
    # Schema drift found before a deploy applies migrations: report it, or fail the deploy on it.
    schema_drift: SchemaDriftPolicy = SchemaDriftPolicy.REPORT
    # The lint gate before every apply: a locking or rewriting statement on a table with at least this
    # many estimated rows is an error that stops the deploy (unless acknowledged), below it a warning.
    lint_error_rows: int = DEFAULT_ERROR_ROWS

    def __post_init__(self) -> None:
        if self.lint_error_rows < 0:
            raise SettingsError(f"migration lint_error_rows={self.lint_error_rows}: must be 0 or more")
        if not 60 <= self.timeout_seconds <= MIGRATION_MAX_TIMEOUT_SECONDS:
            raise SettingsError(
                f"migration timeout_seconds={self.timeout_seconds}: must be 60 to {MIGRATION_MAX_TIMEOUT_SECONDS} "
                f"(the deploy function adds {MIGRATION_CHAIN_MARGIN_SECONDS} s and Lambda stops at "
                f"{LAMBDA_MAX_TIMEOUT_SECONDS} s)"
            )
        if not self.timeout_seconds + MIGRATION_CHAIN_MARGIN_SECONDS <= self.total_timeout_seconds <= (
            MIGRATION_MAX_TOTAL_SECONDS
        ) or self.total_timeout_seconds % MIGRATION_POLL_SECONDS:
            raise SettingsError(
                f"migration total_timeout_seconds={self.total_timeout_seconds}: must be a multiple of "
                f"{MIGRATION_POLL_SECONDS} from timeout_seconds + {MIGRATION_CHAIN_MARGIN_SECONDS} "
                f"({self.timeout_seconds + MIGRATION_CHAIN_MARGIN_SECONDS}) to {MIGRATION_MAX_TOTAL_SECONDS} "
                f"(CloudFormation waits at most {CUSTOM_RESOURCE_MAX_SECONDS} s for a custom resource)"
            )
        if not 128 <= self.memory_mb <= 10_240:
            raise SettingsError(f"migration memory_mb={self.memory_mb}: must be 128 to 10240 (Lambda's range)")

    @property
    def deploy_timeout_seconds(self) -> int:
        """The out-of-VPC deploy function waits for one run of the runner, then answers."""
        return self.timeout_seconds + MIGRATION_CHAIN_MARGIN_SECONDS

    @property
    def provider_timeout_seconds(self) -> int:
        """The Provider framework's total timeout: past the deploy function's own deadline for
        migrations, so that its message, not the framework's "Operation timed out", ends a deploy."""
        return self.total_timeout_seconds + MIGRATION_CHAIN_MARGIN_SECONDS

    @property
    def service_timeout_seconds(self) -> int:
        """How long CloudFormation waits for the custom resource before failing the deploy."""
        return self.provider_timeout_seconds + MIGRATION_CHAIN_MARGIN_SECONDS + 3 * MIGRATION_POLL_SECONDS


@dataclass(frozen=True)
class RehearsalSettings:
    """scripts/rehearse.sh on this environment: the budgets its verdict is judged by, and whether
    scripts/deploy.sh must rehearse the pending migrations on a clone before it deploys them."""

    # Before a deploy that changes the migrations, rehearse them on a copy-on-write clone and stop,
    # before anything changes, when one fails or exceeds a budget (Aurora only: rds-free has no clone).
    required: bool = False
    max_lock_seconds: float = 5.0  # an ACCESS EXCLUSIVE lock held longer is over budget
    max_duration_seconds: float = 600.0  # a migration running longer is over budget

    def __post_init__(self) -> None:
        for setting, value in (("max_lock_seconds", self.max_lock_seconds),
                               ("max_duration_seconds", self.max_duration_seconds)):  # fmt: skip
            if not 0 <= value <= MIGRATION_MAX_TIMEOUT_SECONDS:
                raise SettingsError(
                    f"rehearsal {setting}={value:g}: must be 0 to {MIGRATION_MAX_TIMEOUT_SECONDS} "
                    "(a rehearsal runs in one run of the migration function)"
                )


@dataclass(frozen=True)
class DatabaseAccess:
    """Who logs in to the database and how: the master user's password is RDS's to keep and rotate;
    applications log in as their own roles with IAM tokens (the deploy creates those roles)."""

    application_role: str = APPLICATION_ROLE  # read/write on the migrations' tables
    readonly_role: str = READONLY_ROLE  # SELECT only: reports and support
    master_password_rotation_days: int = MASTER_PASSWORD_ROTATION_DAYS
    # A customer managed KMS key for the master secret (RDS uses aws/secretsmanager without one).
    master_secret_kms_key_arn: str | None = None

    def __post_init__(self) -> None:
        for setting, role in (("application_role", self.application_role), ("readonly_role", self.readonly_role)):
            if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", role) or role.startswith("pg_"):
                raise SettingsError(
                    f"{setting}={role!r}: a PostgreSQL role name of lowercase letters, digits and _ "
                    "(at most 63, not starting with a digit or pg_)"
                )
            if role in (DATABASE_USER, "rds_iam"):
                raise SettingsError(f"{setting}={role!r}: that role exists already; pick an own name")
        if self.application_role == self.readonly_role:
            raise SettingsError(f"application_role and readonly_role are both {self.application_role!r}")
        if not 1 <= self.master_password_rotation_days <= 365:
            raise SettingsError(
                f"master_password_rotation_days={self.master_password_rotation_days}: must be 1 to 365"
            )
        if self.master_secret_kms_key_arn is not None and not re.fullmatch(
            r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[0-9a-f-]{36}", self.master_secret_kms_key_arn
        ):
            raise SettingsError(
                f"master_secret_kms_key_arn={self.master_secret_kms_key_arn!r} is not a KMS key ARN "
                "(arn:aws:kms:<region>:<account>:key/<key id>)"
            )


# A migration version as the runner records it: the file stem NNN_description (database/migrator/discovery.py).
_MIGRATION_VERSION = r"[0-9]+_[A-Za-z0-9][A-Za-z0-9_.-]*"
# A manual snapshot's identifier (a letter first; letters, digits and single hyphens; no trailing
# hyphen; at most 255), an automated one's ("rds:" before it), or the ARN of either.
_SNAPSHOT_NAME = r"(?:rds:)?[A-Za-z](?:-?[A-Za-z0-9]){0,254}"
_SNAPSHOT_ARN = r"arn:aws[a-z-]*:rds:[a-z0-9-]+:\d{12}:(?P<kind>cluster-snapshot|snapshot):" + _SNAPSHOT_NAME


@dataclass(frozen=True)
class SnapshotRestore:
    """An environment whose database is created from a snapshot of an existing one (the database the
    old setup scripts made): see docs/moving-from-old-setup.md.

    ``snapshot`` only matters when CloudFormation creates the database. Never change or remove it once
    the stack exists: CloudFormation would replace the database with a new one (restored again, or
    empty); the database's fixed name (pg-schema-deploy-<env>) makes it refuse that update instead.
    """

    # Aurora: a DB cluster snapshot identifier or ARN (or a DB snapshot ARN: RDS for PostgreSQL into
    # Aurora); rds-free: a DB snapshot identifier or ARN. From the same account and region.
    snapshot: str | None = None
    # The first migrating deploy on a database without tracking rows records every migration up to
    # this one as applied without running it (baselined), then applies the rest; once the database
    # records migrations (the old runner's table included) it is ignored.
    baseline_version: str | None = None
    # The database inside the snapshot that the migrations run in, when it is not users_<environment>
    # (the old scripts made users_production: a testing environment restored from it names that).
    database_name: str | None = None

    def __post_init__(self) -> None:
        if self.snapshot is not None and not re.fullmatch(f"{_SNAPSHOT_NAME}|{_SNAPSHOT_ARN}", self.snapshot):
            raise SettingsError(
                f"snapshot={self.snapshot!r} is neither a snapshot identifier (my-old-db-final, rds:...) nor a "
                "snapshot ARN (arn:aws:rds:<region>:<account>:cluster-snapshot:<id> or ...:snapshot:<id>)"
            )
        if self.baseline_version is not None and (
            not re.fullmatch(_MIGRATION_VERSION, self.baseline_version) or self.baseline_version.endswith(".sql")
        ):
            raise SettingsError(
                f"baseline_version={self.baseline_version!r} is not a migration version: the file name without "
                ".sql, NNN_description (e.g. 004_add_orders)"
            )
        if self.database_name is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,62}", self.database_name):
            raise SettingsError(
                f"restore database_name={self.database_name!r}: a PostgreSQL database name of letters, digits "
                "and _ (a letter first, at most 63)"
            )
        for setting, value in (("baseline_version", self.baseline_version), ("database_name", self.database_name)):
            if value is not None and self.snapshot is None:
                raise SettingsError(
                    f"{setting}={value!r} applies to a database created from a snapshot, and no snapshot is set: "
                    "a new database is empty and gets every migration"
                )

    @property
    def snapshot_kind(self) -> str | None:
        """``cluster-snapshot`` or ``snapshot`` for an ARN, None for an identifier (or no snapshot)."""
        match = re.fullmatch(_SNAPSHOT_ARN, self.snapshot or "")
        return match.group("kind") if match else None


@dataclass(frozen=True)
class EnvironmentSettings:
    """Everything one environment's stack is built from."""

    name: str
    flavour: Flavour
    aurora: AuroraCapacity
    rds: RdsInstance
    backup_retention_days: int
    deletion_protection: bool
    removal: Removal
    multi_az: bool = False  # RDS Multi-AZ instance / an Aurora reader in a second AZ
    log_retention_days: int = 30
    network: NetworkSettings = field(default_factory=NetworkSettings)
    migration: MigrationSettings = field(default_factory=MigrationSettings)
    access: DatabaseAccess = field(default_factory=DatabaseAccess)
    rehearsal: RehearsalSettings = field(default_factory=RehearsalSettings)
    # Create the database from a snapshot of an existing one (none: a new, empty database).
    restore: SnapshotRestore = field(default_factory=SnapshotRestore)
    # Leave at POSTGRES_VERSION; a different value is for trying an upgrade in one environment first.
    engine_version: str = POSTGRES_VERSION

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z][a-z0-9]{1,15}", self.name):
            raise SettingsError(f"environment name {self.name!r}: lowercase letters and digits, 2-16 chars")
        if not 1 <= self.backup_retention_days <= 35:
            raise SettingsError(f"backup_retention_days={self.backup_retention_days}: must be 1 to 35")
        if self.log_retention_days not in LOG_RETENTION_DAYS:
            raise SettingsError(
                f"log_retention_days={self.log_retention_days}: allowed are {', '.join(map(str, LOG_RETENTION_DAYS))}"
            )
        parse_version(self.engine_version)
        if (
            self.flavour is Flavour.AURORA_SERVERLESS
            and self.aurora.scales_to_zero
            and not aurora_supports_scale_to_zero(self.engine_version)
        ):
            raise SettingsError(
                f"{self.name}: Aurora PostgreSQL {self.engine_version} cannot scale to 0 ACU (auto-pause needs "
                "13.15+, 14.12+, 15.7+, 16.3+ or 17+); raise aurora.min_acu to 0.5 or pick a newer version"
            )
        if self.flavour is Flavour.RDS_FREE and self.restore.snapshot_kind == "cluster-snapshot":
            raise SettingsError(
                f"{self.name}: snapshot={self.restore.snapshot!r} is a DB cluster snapshot (Aurora); the "
                f"{Flavour.RDS_FREE} flavour restores a DB snapshot (arn:...:snapshot:<id>)"
            )

    @property
    def major_version(self) -> int:
        """PostgreSQL major of this environment (POSTGRES_MAJOR_VERSION unless engine_version is changed)."""
        return parse_version(self.engine_version)[0]

    @property
    def stack_name(self) -> str:
        return f"{PROJECT_NAME}-{self.name}"

    @property
    def database_name(self) -> str:
        """users_<environment>, or the database of the snapshot the environment was restored from."""
        return self.restore.database_name or f"users_{self.name}"

    @property
    def username(self) -> str:
        return DATABASE_USER

    @property
    def port(self) -> int:
        return DATABASE_PORT

    @property
    def identifier(self) -> str:
        """Physical name of the DB cluster/instance (and so of its log group): pg-schema-deploy-<env>."""
        return f"pg-schema-deploy-{self.name}"


TESTING = EnvironmentSettings(
    name="testing",
    flavour=Flavour.AURORA_SERVERLESS,
    # Pauses after 10 minutes without connections: idle cost is storage only.
    aurora=AuroraCapacity(min_acu=0, max_acu=2, auto_pause_seconds=600),
    rds=RdsInstance(instance_class="db.t3.micro", allocated_storage_gib=20),
    backup_retention_days=1,
    deletion_protection=False,
    removal=Removal.DESTROY,
    multi_az=False,
    log_retention_days=7,
    # Not production's 10.40.0.0/16: the two VPCs can be peered or attached to one transit gateway.
    network=NetworkSettings(cidr="10.41.0.0/16"),
)

PRODUCTION = EnvironmentSettings(
    name="production",
    flavour=Flavour.AURORA_SERVERLESS,
    # Never pauses: no resume delay for users; 0.5 ACU is the smallest floor that stays warm.
    aurora=AuroraCapacity(min_acu=0.5, max_acu=8),
    rds=RdsInstance(instance_class="db.t3.micro", allocated_storage_gib=20),
    backup_retention_days=14,
    deletion_protection=True,
    removal=Removal.SNAPSHOT,
    multi_az=False,
    log_retention_days=90,
    # Long migrations on real data get most of the hour CloudFormation waits for a custom resource.
    migration=MigrationSettings(total_timeout_seconds=3000),
    # A deploy that changes the migrations first rehearses them on a clone of this database.
    rehearsal=RehearsalSettings(required=True),
)

ENVIRONMENTS: Mapping[str, EnvironmentSettings] = {env.name: env for env in (TESTING, PRODUCTION)}

# Context keys `cdk -c KEY=VALUE` understands; each also works as KEY.<environment>.
_Choice = TypeVar("_Choice", bound=StrEnum)
CONTEXT_KEYS = (
    "database", "vpc_id", "rds_instance_class", "secrets_manager_endpoint", "schema_drift", "lint_error_rows",
    "rehearsal_required",
    "snapshot", "baseline_version",
)
_BOOLEAN_CONTEXT_VALUES = {"true": True, "false": False}


def _context_value(context: Mapping[str, object], key: str, env: str) -> tuple[str, str] | None:
    """The (key as given, value) of KEY.<env>, else of KEY, else None."""
    for candidate in (f"{key}.{env}", key):
        value = context.get(candidate)
        if value is not None and value != "":
            if not isinstance(value, str):
                raise ContextError(f"context key {candidate!r} must be a string, got {value!r}")
            return candidate, value
    return None


def _context_choice(context: Mapping[str, object], key: str, env: str, choices: type[_Choice]) -> _Choice | None:
    """The value of KEY.<env> or KEY as one of ``choices`` (a StrEnum), else None; any other value
    is refused, naming the allowed ones."""
    found = _context_value(context, key, env)
    if found is None:
        return None
    given, value = found
    allowed = [choice.value for choice in choices]
    if value not in allowed:
        raise ContextError(f"context key {given!r}={value!r}: allowed values are {', '.join(allowed)}")
    return choices(value)


def _check_context_keys(context: Mapping[str, object], environments: Mapping[str, EnvironmentSettings]) -> None:
    for key in context:
        base, dot, env = key.partition(".")
        if base in CONTEXT_KEYS and dot and env not in environments:
            raise ContextError(
                f"context key {key!r} names no environment: allowed are "
                + ", ".join(f"{base}.{name}" for name in environments)
            )


def is_cdk_context_key(key: str) -> bool:
    """Keys CDK itself puts in the context: feature flags (`@aws-cdk/...`), the CLI's `aws:cdk:...`
    settings, context-provider lookups cached in cdk.context.json (`vpc-provider:account=...`) and
    notices acknowledged with `cdk acknowledge`."""
    return key.startswith(("@", "aws:")) or ":" in key or key == "acknowledged-issue-numbers"


def check_known_context_keys(
    context: Mapping[str, object],
    known: Iterable[str],
    per_environment: Iterable[str] = (),
    environments: Mapping[str, EnvironmentSettings] = ENVIRONMENTS,
) -> None:
    """Refuse a context key nobody reads: a misspelled `-c databse=rds-free` would otherwise be
    ignored silently, and the deploy would go on with the default flavour. `known` keys are read as
    given; `per_environment` keys also as KEY.<environment>."""
    _check_context_keys(context, environments)
    per_environment = tuple(per_environment)
    allowed = set(known) | set(per_environment)
    allowed |= {f"{key}.{name}" for key in per_environment for name in environments}
    unknown = sorted(key for key in context if key not in allowed and not is_cdk_context_key(key))
    if unknown:
        plain = set(known) - set(per_environment)
        listed = ", ".join(sorted(plain | {f"{key}[.<environment>]" for key in per_environment}))
        raise ContextError(
            f"unknown context key {unknown[0]!r}: known keys are {listed} "
            f"(environments: {', '.join(environments)})"
        )


def apply_context(
    context: Mapping[str, object],
    environments: Mapping[str, EnvironmentSettings] = ENVIRONMENTS,
) -> tuple[EnvironmentSettings, ...]:
    """Environments with the command line's ``-c`` overrides applied, in declaration order.

    ``context`` maps context keys to values (CDK passes ``-c`` values as strings). Only the keys in
    CONTEXT_KEYS (and their ``.<environment>`` forms) are read; any other key is left to CDK.
    """
    _check_context_keys(context, environments)
    resolved = []
    for name, env in environments.items():
        changes: dict[str, object] = {}
        flavour = _context_choice(context, "database", name, Flavour)
        if flavour is not None:
            changes["flavour"] = flavour
        vpc = _context_value(context, "vpc_id", name)
        if vpc is not None:
            key, value = vpc
            try:
                changes["network"] = dataclasses.replace(env.network, vpc_id=value)
            except SettingsError as error:
                raise ContextError(f"context key {key!r}: {error}") from None
        instance_class = _context_value(context, "rds_instance_class", name)
        if instance_class is not None:
            key, value = instance_class
            if value not in RDS_FREE_INSTANCE_CLASSES:
                raise ContextError(
                    f"context key {key!r}={value!r}: allowed values are {', '.join(RDS_FREE_INSTANCE_CLASSES)}"
                )
            changes["rds"] = dataclasses.replace(env.rds, instance_class=value)
        migration: dict[str, object] = {}
        endpoint = _context_value(context, "secrets_manager_endpoint", name)
        if endpoint is not None:
            key, value = endpoint
            if value not in _BOOLEAN_CONTEXT_VALUES:
                raise ContextError(f"context key {key!r}={value!r}: allowed values are true, false")
            migration["secrets_manager_endpoint"] = _BOOLEAN_CONTEXT_VALUES[value]
        drift = _context_choice(context, "schema_drift", name, SchemaDriftPolicy)
        if drift is not None:
            migration["schema_drift"] = drift
        error_rows = _context_value(context, "lint_error_rows", name)
        if error_rows is not None:
            key, value = error_rows
            if not value.isdigit():
                raise ContextError(f"context key {key!r}={value!r}: expected a whole number of rows, 0 or more")
            migration["lint_error_rows"] = int(value)
        required = _context_value(context, "rehearsal_required", name)
        if required is not None:
            key, value = required
            if value not in _BOOLEAN_CONTEXT_VALUES:
                raise ContextError(f"context key {key!r}={value!r}: allowed values are true, false")
            changes["rehearsal"] = dataclasses.replace(env.rehearsal, required=_BOOLEAN_CONTEXT_VALUES[value])
        if migration:
            changes["migration"] = dataclasses.replace(env.migration, **migration)  # type: ignore[arg-type]
        restore = _restore_from_context(context, name, env.restore)
        if restore is not None:
            changes["restore"] = restore
        resolved.append(dataclasses.replace(env, **changes) if changes else env)  # type: ignore[arg-type]
    _check_rds_keys_apply(context, tuple(resolved))
    return tuple(resolved)


def _restore_from_context(
    context: Mapping[str, object], env: str, restore: SnapshotRestore
) -> SnapshotRestore | None:
    """``snapshot`` / ``baseline_version`` (plain or .<env>) over the environment's SnapshotRestore."""
    changed = restore
    for key in ("snapshot", "baseline_version"):
        found = _context_value(context, key, env)
        if found is None:
            continue
        given, value = found
        try:
            changed = dataclasses.replace(changed, **{key: value})
        except SettingsError as error:
            raise ContextError(f"context key {given!r} ({env}): {error}") from None
    return None if changed is restore else changed


def _check_rds_keys_apply(context: Mapping[str, object], resolved: tuple[EnvironmentSettings, ...]) -> None:
    """rds_instance_class only shapes the rds-free flavour: set for an environment that runs Aurora
    (or, as the plain key, for none that runs rds-free) it would be ignored silently."""
    aurora = [env.name for env in resolved if env.flavour is Flavour.AURORA_SERVERLESS]
    keys = [(f"rds_instance_class.{name}", [name], f"database.{name}") for name in aurora]
    if len(aurora) == len(resolved):
        keys.append(("rds_instance_class", aurora, "database"))
    for key, names, flag in keys:
        if context.get(key):
            raise ContextError(
                f"context key {key!r} applies to the {Flavour.RDS_FREE} flavour, but {' and '.join(names)} "
                f"run{'s' if len(names) == 1 else ''} {Flavour.AURORA_SERVERLESS}: add -c {flag}={Flavour.RDS_FREE} "
                "or drop the key"
            )
