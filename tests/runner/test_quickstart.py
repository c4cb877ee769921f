"""The README's first command on a fresh copy of the repository, in a 0700 directory (like a clone in
/root/project): installs from the lock files, starts the pinned PostgreSQL, migrates, synthesizes.
As root the server runs as `nobody`, which cannot enter that directory. Slow (installs .venv and
node_modules, from the warm uv and npm caches); CI runs it."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from database.postgres_version import POSTGRES_VERSION

from .helpers import PROJECT_ROOT
from .test_local_db import clean_env, free_port


def fresh_copy(destination: Path) -> None:
    """The repository's files as `git clone` gives them (with uncommitted edits): no .venv, node_modules, .local."""
    if shutil.which("git") is None:
        pytest.skip("git is needed to list the repository's files")
    listed = subprocess.run(
        ["git", "-C", str(PROJECT_ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=False,
    )
    if listed.returncode != 0:
        pytest.skip("the project is not a git checkout")
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.mark.slow
def test_quickstart_in_a_fresh_copy_under_a_private_directory() -> None:
    private = Path(tempfile.mkdtemp(prefix="quickstart-test-"))
    project = private / "project"
    assert private.stat().st_mode & 0o777 == 0o700
    try:
        fresh_copy(project)
        result = subprocess.run(
            [str(project / "scripts" / "quickstart.sh")],
            env=clean_env(CI="true", LOCAL_PG_PORT=str(free_port())),
            capture_output=True, text=True, timeout=900, cwd=private,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, output
        assert f"Local PostgreSQL {POSTGRES_VERSION} running" in output
        assert f"✅ Database connection successful (PostgreSQL {POSTGRES_VERSION})" in output
        assert "🎉 All migrations applied successfully!" in output
        assert "✅ No pending migrations" in output
        assert "synth: 2 stack(s) in cdk.out/, cdk-nag clean" in output
        assert "differs from the deployed" not in output
    finally:
        subprocess.run([str(project / "scripts" / "local-db.sh"), "destroy"], env=clean_env(),
                       capture_output=True, check=False, timeout=120)
        shutil.rmtree(private, ignore_errors=True)
