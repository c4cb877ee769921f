"""Small translations from plain settings values to CDK types, shared by the components."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_logs as logs

from stacks.settings import Removal

_RETENTION = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
}

_REMOVAL = {
    Removal.DESTROY: RemovalPolicy.DESTROY,
    Removal.SNAPSHOT: RemovalPolicy.SNAPSHOT,
    # Kept after a delete or a replacement, but not after a failed first create: that rollback
    # deletes it, so the retry does not meet a leftover of the same name.
    Removal.RETAIN: RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
}


def log_retention(days: int) -> logs.RetentionDays:
    """The CloudWatch Logs retention for ``days`` (only CloudWatch's fixed values are accepted)."""
    try:
        return _RETENTION[days]
    except KeyError:
        raise ValueError(f"log retention of {days} days: allowed are {sorted(_RETENTION)}") from None


def removal_policy(removal: Removal) -> RemovalPolicy:
    """The database's removal policy."""
    return _REMOVAL[removal]


def companion_removal_policy(removal: Removal) -> RemovalPolicy:
    """Removal policy for what belongs to the database (its secret, its logs): kept unless destroyed.

    SNAPSHOT is only valid on resources that take snapshots, so SNAPSHOT maps to a retain here: a
    final snapshot is useless without the password that opens it. RETAIN_ON_UPDATE_OR_DELETE
    (DeletionPolicy RetainExceptOnCreate): the rollback of a failed first create deletes them, so
    that log groups and secrets with fixed names do not block the retry ("already exists").
    """
    return RemovalPolicy.DESTROY if removal is Removal.DESTROY else RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE
