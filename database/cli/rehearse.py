"""run-migrations.sh --rehearse and scripts/rehearse.sh: the report of a rehearsal on a copy
(database/rehearsal), for people and for machines."""

from __future__ import annotations

from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from database.rehearsal.measure import Budgets, Rehearsal


def print_report(rehearsal: Rehearsal, budgets: Budgets, out: TextIO) -> None:
    print(f"📏 Rehearsal on {rehearsal.copy}, budgets: ACCESS EXCLUSIVE locks up to "
          f"{budgets.max_lock_seconds:g} s, migrations up to {budgets.max_duration_seconds:g} s", file=out)
    for measure in rehearsal.migrations:
        print(f"  • {measure.version}: {measure.duration_ms} ms", file=out)
        for lock in measure.locks:
            print(f"      {lock.mode} on {lock.table} for {lock.held_ms} ms", file=out)
        for table in measure.rewritten:
            print(f"      rewrote {table}", file=out)
        for index in measure.indexes_built:
            print(f"      built index {index['name']} ({index['bytes']:,} bytes)", file=out)
        for sentence in measure.over_budget:
            print(f"      ❌ over budget: {sentence}", file=out)
    for finding in rehearsal.findings:
        state = " (acknowledged)" if finding.acknowledged else ""
        print(f"  lint {finding.severity}{state}: {finding.file}:{finding.line} {finding.rule}: {finding.message}",
              file=out)
    if rehearsal.failure is not None:
        print(f"❌ Rehearsal failed: {rehearsal.failure}", file=out)
    elif rehearsal.within_budgets:
        print(f"✅ Rehearsal within budgets: {len(rehearsal.migrations)} migration(s)", file=out)
    else:
        print("❌ Rehearsal over budget", file=out)


def exit_code(rehearsal: Rehearsal) -> int:
    """As an apply would exit on a failure (1 failed, 2 bad file, 130 Ctrl-C); over budget: 1."""
    if rehearsal.failure is not None:
        return rehearsal.failure.exit_code
    return 0 if rehearsal.within_budgets else 1
