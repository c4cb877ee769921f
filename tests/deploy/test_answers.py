"""What the deploy function hands CloudFormation stays within its limits on long histories."""

from __future__ import annotations

import json

from schema_migrations import deploy


def test_thousands_of_applied_migrations_fit_the_resource_attributes() -> None:
    versions = [f"{number:04d}_add_table_number_{number}" for number in range(1, 3001)]

    data = deploy._data("3000_add_table_number_3000", versions, rollback=False)

    assert len(json.dumps(data)) < 4096
    assert data["AppliedCount"] == "3000" and data["SchemaVersion"] == "3000_add_table_number_3000"
    assert data["AppliedThisDeploy"].startswith("(")  # "(N earlier),..." then the newest, in order
    earlier, *kept = data["AppliedThisDeploy"].split(",")
    assert kept == versions[-len(kept):]
    assert earlier == f"({3000 - len(kept)} earlier)"


def test_a_long_failure_is_cut_to_fit_an_event_and_keeps_its_first_line() -> None:
    answer = {
        "error": "database/migrations/004_x.sql:3: 004_x failed: SQLSTATE 42601: syntax error at or near \"TABL\""
        + "\n  CONTEXT: " + "x" * 5000,
        "kind": "MigrationFailedError",
        "applied": ["002_a", "003_b"],
    }

    message = deploy.failure_message(answer)

    assert len(message) <= 1000 and message.endswith("…")
    assert message.startswith(
        'database/migrations/004_x.sql:3: 004_x failed: SQLSTATE 42601: syntax error at or near "TABL"; '
        "002_a, 003_b applied earlier in this deploy | CONTEXT: xxx"
    )


def test_out_of_time_is_reported_as_the_runner_counted_it() -> None:
    answer = {"error": "stopped before 003_c ...; 2 of 5 applied; deploy again to continue",
              "kind": "OutOfTimeError", "applied": ["001_a", "002_b"]}  # fmt: skip

    assert deploy.failure_message(answer) == answer["error"]
