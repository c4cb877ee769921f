#!/usr/bin/env python3
"""CDK entry point (cdk.json runs it with the project venv): `npx cdk synth` / `deploy` / `diff`."""

import sys

from aws_cdk import App

from stacks.application import create_stacks
from stacks.settings import SettingsError


def main() -> None:
    app = App()
    try:
        create_stacks(app)
    except SettingsError as error:  # bad -c value or settings: one clear line, no traceback
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    app.synth()


if __name__ == "__main__":
    main()
