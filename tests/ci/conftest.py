"""Fixtures for the CI/deploy tests. Importing the infra conftest puts the project's Node 22 on PATH
(and JSII_NODE) before anything imports aws_cdk."""

from __future__ import annotations

from tests.infra.conftest import ROOT, cdk_json_context

__all__ = ["ROOT", "cdk_json_context"]
