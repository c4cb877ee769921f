"""Find the migration files in a directory and check their names, without a database."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidMigrationError

# NNN_description.sql: any number of digits (001, 0001, 20261125093000), then a description.
_NAME = re.compile(r"^(?P<number>[0-9]+)_(?P<description>[A-Za-z0-9][A-Za-z0-9_.-]*)\.sql$")


@dataclass(frozen=True)
class MigrationFile:
    """A migration on disk. `version` is the file stem, as the old run-migrations.sh recorded it."""

    number: int
    version: str
    path: Path


def discover(directory: Path) -> list[MigrationFile]:
    """Return the directory's migrations ordered by numeric prefix, or raise naming every bad
    name and duplicate number. Contents are checked by the caller that reads them."""
    migrations, problems = scan(directory)
    if problems:
        raise InvalidMigrationError("\n".join(problems))
    return migrations


def scan(directory: Path) -> tuple[list[MigrationFile], list[str]]:
    """The well-named migrations ordered by numeric prefix, and a line per problem found.

    Every `*.sql` file must be a well-named migration and numbers must be unique; other files
    (a README, say) and dotfiles are ignored. Nothing about a bad directory is guessed at.
    """
    try:
        # Names as strings (os.scandir, not Path.iterdir): a thousand Path comparisons cost more
        # than the rest of a no-op run's file handling.
        with os.scandir(directory) as entries:
            found = sorted((entry.name, entry.is_file()) for entry in entries)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidMigrationError(f"{directory}: migrations directory not found") from None
    by_number: dict[int, MigrationFile] = {}
    problems: list[str] = []
    for name, is_file in found:
        if not name.lower().endswith(".sql") or name.startswith("."):
            continue
        path = directory / name
        match = _NAME.match(name)
        if match is None:
            problems.append(
                f"{path}: malformed migration name; expected NNN_description.sql "
                "(digits, underscore, letters/digits/_.-, lower-case .sql)"
            )
            continue
        if not is_file:
            problems.append(f"{path}: not a regular file")
            continue
        migration = MigrationFile(int(match["number"]), name[: -len(".sql")], path)
        clash = by_number.get(migration.number)
        if clash is not None:
            problems.append(f"{path}: duplicate migration number {migration.number} (also {clash.path.name})")
            continue
        by_number[migration.number] = migration
    return [by_number[number] for number in sorted(by_number)], problems


def next_migration_path(directory: Path, description: str, timestamp: str) -> Path:
    """Path for a new migration after the existing ones.

    Sequential directories get the next number at the existing width (at least 3 digits);
    directories that already use timestamp prefixes (12+ digits) get `timestamp`.
    """
    slug = re.sub(r"[^a-z0-9]+", "_", description.lower()).strip("_")
    if not slug:
        raise InvalidMigrationError(f"migration description {description!r} has no letters or digits")
    # Names only: the newest migration may still be the unfinished, comment-only file `new` wrote.
    existing = discover(directory)
    widths = [len(m.version.split("_", 1)[0]) for m in existing]
    if widths and max(widths) >= 12:
        prefix = timestamp
    else:
        number = existing[-1].number + 1 if existing else 1
        prefix = str(number).zfill(max([3, *widths]))
    return directory / f"{prefix}_{slug}.sql"
