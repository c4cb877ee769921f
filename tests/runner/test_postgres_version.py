"""One PostgreSQL version everywhere: the server package pinned in package.json and package-lock.json
is POSTGRES_VERSION (what the stacks deploy), and the tests' server reports exactly that version."""

from __future__ import annotations

import json
import re

from database.postgres_version import POSTGRES_VERSION

from .helpers import PROJECT_ROOT

SERVER_PACKAGE = "@embedded-postgres/"
# The platforms scripts/local-db.sh maps `uname` to; the README names the same ones.
PLATFORMS = {"linux-x64", "linux-arm64", "darwin-arm64", "darwin-x64"}
# The package family versions its PostgreSQL builds as <major>.<minor>.0-beta.<package release>.
PACKAGE_VERSION = re.compile(r"(?P<postgres>\d+\.\d+)\.0-beta\.\d+")


def test_the_pinned_server_package_is_the_deployed_version() -> None:
    manifest = json.loads((PROJECT_ROOT / "package.json").read_text())
    lock = json.loads((PROJECT_ROOT / "package-lock.json").read_text())
    optional = manifest["optionalDependencies"]
    pins = {name: version for name, version in optional.items() if name.startswith(SERVER_PACKAGE)}
    assert {name.removeprefix(SERVER_PACKAGE) for name in pins} == PLATFORMS
    for name, version in pins.items():
        parsed = PACKAGE_VERSION.fullmatch(version)
        assert parsed, f"{name}: {version!r} is not an exact pin of the form 17.9.0-beta.17"
        assert parsed["postgres"] == POSTGRES_VERSION, (
            f"package.json pins {name} {version} (PostgreSQL {parsed['postgres']}) "
            f"but database/postgres_version.py pins POSTGRES_VERSION {POSTGRES_VERSION}"
        )
        assert lock["packages"][f"node_modules/{name}"]["version"] == version, f"package-lock.json is stale for {name}"
    assert lock["packages"][""]["optionalDependencies"] == optional


def test_the_test_server_runs_the_deployed_version(postgresql) -> None:  # type: ignore[no-untyped-def]
    with postgresql.cursor() as cursor:
        cursor.execute("SHOW server_version")
        assert cursor.fetchone() == (POSTGRES_VERSION,)
        cursor.execute('CREATE EXTENSION "uuid-ossp"')  # contrib modules ship with the package
        cursor.execute("SELECT uuid_generate_v4() IS NOT NULL")
        assert cursor.fetchone() == (True,)
