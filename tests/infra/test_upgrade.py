"""A stack deployed before the managed master password takes it as an in-place modification.

data/database_resources_before_managed_password.json holds the database resources (cluster, writer,
instance) as the app synthesized them before the change (commit 5d413c8), for both flavours and both
environments. Against today's synth: the same logical ids, and the only property changes are the
password's (MasterUserPassword gone, ManageMasterUserPassword on), none of which replaces the
database. What replaces it is read from CloudFormation's own resource schemas (createOnlyProperties,
as shipped with cfn-lint), plus MasterUsername and Engine, which the documentation lists as
replacing an Aurora cluster too.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.schema import PROVIDER_SCHEMA_MANAGER

from .conftest import ENVIRONMENTS, FLAVOURS, Synth, synthesize

BEFORE = json.loads(
    (Path(__file__).parent / "data" / "database_resources_before_managed_password.json").read_text()
)
DATABASE_TYPES = ("AWS::RDS::DBCluster", "AWS::RDS::DBInstance")
DOCUMENTED_REPLACING = {"MasterUsername", "Engine"}


def replacing_properties(resource_type: str) -> set[str]:
    schema = PROVIDER_SCHEMA_MANAGER.get_resource_schema("us-east-1", resource_type).schema
    create_only = {path.removeprefix("/properties/").split("/")[0] for path in schema["createOnlyProperties"]}
    return create_only | DOCUMENTED_REPLACING


@pytest.fixture(scope="module", params=FLAVOURS)
def flavour_synth(request: pytest.FixtureRequest) -> tuple[str, Synth]:
    return request.param, synthesize({"database": request.param})


def database_resources(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        logical_id: {"Type": resource["Type"], "Properties": resource["Properties"]}
        for logical_id, resource in template["Resources"].items()
        if resource["Type"] in DATABASE_TYPES
    }


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_database_is_modified_in_place(flavour_synth: tuple[str, Synth], env: str) -> None:
    flavour, synth = flavour_synth
    before = BEFORE[f"{flavour}/{env}"]
    now = database_resources(synth.json[env])
    assert set(now) == set(before)  # a new logical id would be a new database
    changed: set[str] = set()
    for logical_id, resource in now.items():
        old, new = before[logical_id]["Properties"], resource["Properties"]
        assert resource["Type"] == before[logical_id]["Type"]
        differing = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
        assert not differing & replacing_properties(resource["Type"]), (logical_id, differing)
        changed |= {f"{resource['Type']}.{key}" for key in differing}
    main_type = "AWS::RDS::DBCluster" if flavour == "aurora-serverless" else "AWS::RDS::DBInstance"
    assert changed == {f"{main_type}.MasterUserPassword", f"{main_type}.ManageMasterUserPassword"}
    assert [r["Properties"]["MasterUsername"] for r in now.values() if r["Type"] == main_type] == ["webapp"]


def test_the_schema_knows_what_replaces_a_database() -> None:
    """Guards the check above against an empty or renamed schema list."""
    assert {"DBClusterIdentifier", "StorageEncrypted", "MasterUsername"} <= replacing_properties("AWS::RDS::DBCluster")
    assert {"DBInstanceIdentifier", "DBName", "MasterUsername"} <= replacing_properties("AWS::RDS::DBInstance")
    assert "ManageMasterUserPassword" not in replacing_properties("AWS::RDS::DBCluster")
