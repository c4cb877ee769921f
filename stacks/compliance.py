"""cdk-nag (3.x) wiring: the AwsSolutions pack as a CDK validation plugin, and acknowledgments.

cdk-nag 3 runs as a policy-validation plugin (``Validations.of(app).add_plugins(...)``): any
unacknowledged AwsSolutions finding fails ``cdk synth``. Acknowledgments go through
``Validations.of(construct).acknowledge(...)`` and every one must carry a specific reason.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Stage, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def add_nag_checks(app: Stage) -> AwsSolutionsChecks:
    """Run the AwsSolutions rule pack on every synth of ``app``; findings fail the synth."""
    checks = AwsSolutionsChecks(app)
    Validations.of(app).add_plugins(checks)
    return checks


def acknowledge(construct: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one cdk-nag finding on ``construct`` (and its children) with a specific reason."""
    if len(reason) < 40:
        raise ValueError(f"acknowledgment of {rule_id} needs a specific reason, got {reason!r}")
    Validations.of(construct).acknowledge(Acknowledgment(id=rule_id, reason=reason))
