"""Real AWS setup mistakes, in a temporary HOME: botocore itself reads the files and raises its own
errors (nothing is faked), before any request would leave the machine."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

SSO_PROFILE = """\
[profile sso]
sso_session = corp
sso_account_id = 123456789012
sso_role_name = Deployer
region = eu-west-1
[sso-session corp]
sso_start_url = https://example.awsapps.com/start
sso_region = eu-west-1
"""


class Mistake(NamedTuple):
    config: str  # the content of ~/.aws/config
    profile: str | None  # AWS_PROFILE
    expected: tuple[str, ...]  # what the one line must say (HOME is written as {home})


MISTAKES = {
    "unknown profile": Mistake(
        "[default]\nregion = eu-west-1\n", "nosuch",
        ("AWS profile 'nosuch' is not in ~/.aws/config", "`aws configure --profile nosuch`"),
    ),
    "malformed config": Mistake(
        "[default\nregion = eu-west-1\n", None,
        ("{home}/.aws/config is not a valid AWS configuration file (line 1:", "`aws configure`"),
    ),
    "missing SSO sign-in": Mistake(
        SSO_PROFILE, "sso",
        ("AWS SSO sign-in of profile 'sso' is missing or has expired", "`aws sso login --profile sso`"),
    ),
    "partial credentials": Mistake(
        "[profile half]\naws_access_key_id = AKIAEXAMPLE\nregion = eu-west-1\n", "half",
        ("aws_secret_access_key is missing", "`aws configure --profile half`"),
    ),
}


def aws_home_with(mistake: Mistake, home: Path, environment: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """``environment`` with HOME at ``home`` holding the mistaken ~/.aws/config and no other source
    of AWS settings; and the texts the error line must contain."""
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "config").write_text(mistake.config)
    changed = {key: value for key, value in environment.items() if not key.startswith("AWS_")}
    changed.update(HOME=str(home), AWS_EC2_METADATA_DISABLED="true")
    if mistake.profile:
        changed["AWS_PROFILE"] = mistake.profile
    return changed, [text.format(home=home) for text in mistake.expected]
