#!/usr/bin/env python3
"""CDK entry point (cdk.json runs it with the project venv): `npx cdk synth` / `deploy` / `diff`."""

from aws_cdk import App

from stacks.application import create_stacks

app = App()
create_stacks(app)
app.synth()
