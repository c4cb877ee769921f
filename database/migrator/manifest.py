"""A compact description of a migrations directory, the same at synth time and at run time.

The CDK app puts it in the migration custom resource's properties, so that a deploy runs exactly
when the migrations change and `cdk diff` names the files it adds or edits. The deploy-time
function computes it again over the files it carries: a mismatch means CloudFormation is asking
for a different set (a rollback to the previous properties), and a forward-only runner then
leaves the schema alone. No database is needed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .orchestration import load_migrations, load_repeatables

# How many of the newest files the manifest lists by name. A template holds at most 1 MB, a
# history can hold thousands of files: the window keeps the properties small, and the digest
# covers every file.
RECENT_WINDOW = 100
SHORT_DIGEST_LENGTH = 12


@dataclass(frozen=True)
class Manifest:
    digest: str  # sha256 over every file's version and content digest, in order
    count: int
    latest: str | None  # version of the newest file
    recent: dict[str, str]  # newest files (at most RECENT_WINDOW): version -> short content digest


def build_manifest(directory: Path, window: int = RECENT_WINDOW) -> Manifest:
    """Describe every migration in ``directory``; raises InvalidMigrationError as a run would."""
    migrations = load_migrations(directory)
    whole = hashlib.sha256()
    for migration in [*migrations, *load_repeatables(directory)]:  # a changed R__ file changes it too
        whole.update(f"{migration.version}\0{migration.digest}\n".encode())
    newest = migrations[-window:] if window > 0 else []
    return Manifest(
        digest=whole.hexdigest(),
        count=len(migrations),
        latest=migrations[-1].version if migrations else None,
        recent={migration.version: migration.digest[:SHORT_DIGEST_LENGTH] for migration in newest},
    )
