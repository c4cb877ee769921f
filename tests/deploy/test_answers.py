"""What the deploy function hands CloudFormation stays within its limits on long histories and
long messages, counted as CloudFormation counts them: UTF-8 bytes of the JSON response."""

from __future__ import annotations

import json

import pytest
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

    message = str(deploy.MigrationDeployError(deploy.failure_message(answer)))

    assert deploy.json_bytes(message) <= deploy.MESSAGE_BYTES and message.endswith("…")
    assert message.startswith(
        'database/migrations/004_x.sql:3: 004_x failed: SQLSTATE 42601: syntax error at or near "TABL"; '
        "002_a, 003_b applied earlier in this deploy | CONTEXT: xxx"
    )


def test_out_of_time_is_reported_as_the_runner_counted_it() -> None:
    answer = {"error": "stopped before 003_c ...; 2 of 5 applied; deploy again to continue",
              "kind": "OutOfTimeError", "applied": ["001_a", "002_b"]}  # fmt: skip

    assert deploy.failure_message(answer) == answer["error"]


@pytest.mark.parametrize("unit", ["x", "€", "𝄞", '"', "\n", "\u0001"])
def test_a_message_is_cut_to_its_byte_limit_whatever_its_characters(unit: str) -> None:
    """Multi-byte characters take up to 4 bytes, quotes and control characters grow when escaped."""
    message = str(deploy.MigrationDeployError("004_x failed: " + unit * 5000))

    assert deploy.MESSAGE_BYTES - 8 <= deploy.json_bytes(message) <= deploy.MESSAGE_BYTES
    assert message.startswith("004_x failed: ") and message.endswith("…")


def test_a_short_message_is_left_as_it_is() -> None:
    assert str(deploy.MigrationDeployError("ä" * 600)) == "ä" * 600


def test_versions_with_multi_byte_names_fit_the_attributes() -> None:
    versions = [f"{number:04d}_ändere_tabelle_größe_{number}" for number in range(1, 400)]

    data = deploy._data(versions[-1], versions, rollback=False)

    assert deploy.json_bytes(data["AppliedThisDeploy"]) <= deploy.APPLIED_BYTES
    assert len(json.dumps(data, ensure_ascii=False).encode()) < 2048
