"""Fixtures for the infrastructure tests: each app is synthesized once per session.

jsii starts its Node.js kernel on the first aws_cdk import, so the project's Node 22 (node_modules,
installed by scripts/setup.sh) goes first on PATH before anything imports aws_cdk.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "node_modules" / ".bin"
if (NODE_BIN / "node").exists():
    if not os.environ.get("PATH", "").startswith(str(NODE_BIN)):
        os.environ["PATH"] = f"{NODE_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ.setdefault("JSII_NODE", str(NODE_BIN / "node"))
os.environ.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")

import pytest  # noqa: E402
from aws_cdk import App, PolicyValidationPluginReport  # noqa: E402
from aws_cdk.assertions import Template  # noqa: E402
from cdk_nag import AwsSolutionsChecks  # noqa: E402

from stacks.application import create_stacks  # noqa: E402
from stacks.database_stack import DatabaseStack  # noqa: E402

FLAVOURS = ("aurora-serverless", "rds-free")
ENVIRONMENTS = ("testing", "production")


def cdk_json_context() -> dict[str, Any]:
    """The feature flags of cdk.json, which `cdk synth` passes to the app (tests must see the same)."""
    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
    return context


@dataclass
class Synth:
    """One synthesized app: its stacks, their templates (object and JSON) and the cdk-nag report."""

    app: App
    stacks: dict[str, DatabaseStack]
    templates: dict[str, Template]
    json: dict[str, dict[str, Any]]
    nag_report: PolicyValidationPluginReport


def synthesize(context: Mapping[str, object] | None = None) -> Synth:
    """Builds the app exactly as app.py does (cdk-nag plugin included) and synthesizes it."""
    app = App(context={**cdk_json_context(), **(context or {})})
    stacks = {stack.settings.name: stack for stack in create_stacks(app)}
    # Template.from_stack synthesizes the whole app; the registered cdk-nag plugin fails that synth
    # on any unacknowledged finding. validate_scope gives the same findings as data for asserts.
    templates = {name: Template.from_stack(stack) for name, stack in stacks.items()}
    report = AwsSolutionsChecks().validate_scope(app)
    return Synth(
        app=app,
        stacks=stacks,
        templates=templates,
        json={name: dict(template.to_json()) for name, template in templates.items()},
        nag_report=report,
    )


@pytest.fixture(scope="session")
def synth_cache() -> Iterator[dict[str, Synth]]:
    yield {}


def _on_flavour(flavour: str, cache: dict[str, Synth]) -> Synth:
    if flavour not in cache:
        cache[flavour] = synthesize({"database": flavour})
    return cache[flavour]


@pytest.fixture(scope="session", params=FLAVOURS)
def synth(request: pytest.FixtureRequest, synth_cache: dict[str, Synth]) -> Synth:
    """The app with every environment on one flavour (via `-c database=<flavour>`)."""
    return _on_flavour(request.param, synth_cache)


@pytest.fixture(scope="session")
def aurora_synth(synth_cache: dict[str, Synth]) -> Synth:
    """Every environment on Aurora Serverless v2, for flavour-specific tests."""
    return _on_flavour("aurora-serverless", synth_cache)


@pytest.fixture(scope="session")
def rds_synth(synth_cache: dict[str, Synth]) -> Synth:
    """Every environment on the RDS free-tier instance, for flavour-specific tests."""
    return _on_flavour("rds-free", synth_cache)


@pytest.fixture(scope="session")
def default_synth() -> Synth:
    """The app without any context override (what `npx cdk synth` builds)."""
    return synthesize()
