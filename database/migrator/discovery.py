"""Find the migration files in a directory and check their names, without a database."""

from __future__ import annotations

import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidMigrationError

DOWN_SUFFIX = ".down.sql"
# R__description.sql (Flyway's convention): views, functions, triggers, grants kept as source, applied
# after the numbered migrations, in name order, again whenever their SQL changes.
REPEATABLE = re.compile(r"^R__[A-Za-z0-9][A-Za-z0-9_.-]*\.sql$")
# NNN_description.sql: any number of digits (001, 0001, 20261125093000), then a description.
_NAME = re.compile(r"^(?P<number>[0-9]+)_(?P<description>[A-Za-z0-9][A-Za-z0-9_.-]*)\.sql$")


@dataclass(frozen=True)
class MigrationFile:
    """A migration on disk. `version` is the file stem, as the old run-migrations.sh recorded it."""

    number: int
    version: str
    path: Path
    down: Path | None = None  # NNN_description.down.sql: its undo, never applied forward


def discover(directory: Path) -> list[MigrationFile]:
    """Return the directory's migrations ordered by numeric prefix, or raise naming every bad
    name and duplicate number. Contents are checked by the caller that reads them."""
    migrations, problems = scan(directory)
    if problems:
        raise InvalidMigrationError("\n".join(problems))
    return migrations


def scan(directory: Path) -> tuple[list[MigrationFile], list[str]]:
    """The well-named migrations ordered by numeric prefix, and a line per problem found.

    Every `*.sql` file must be a well-named migration, or the undo of one (`NNN_description.down.sql`
    beside `NNN_description.sql`), and numbers must be unique; other files (a README, say) and
    dotfiles are ignored. Nothing about a bad directory is guessed at.
    """
    try:
        # Names as strings (os.scandir, not Path.iterdir): a thousand Path comparisons cost more
        # than the rest of a no-op run's file handling.
        with os.scandir(directory) as entries:
            found = sorted((entry.name, entry.is_file()) for entry in entries)
    except (FileNotFoundError, NotADirectoryError):
        raise InvalidMigrationError(f"{directory}: migrations directory not found") from None
    by_number: dict[int, MigrationFile] = {}
    clashes: list[MigrationFile] = []
    problems: list[str] = []
    downs: dict[str, Path] = {}
    for name, is_file in found:
        if not name.lower().endswith(".sql") or name.startswith(".") or REPEATABLE.match(name):
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
        if name.endswith(DOWN_SUFFIX):
            downs[name[: -len(DOWN_SUFFIX)]] = path
            continue
        migration = MigrationFile(int(match["number"]), name[: -len(".sql")], path)
        if migration.number in by_number:
            clashes.append(migration)
            continue
        by_number[migration.number] = migration
    problems.extend(_duplicate_problems(by_number, clashes))
    for number, migration in by_number.items():
        if (down := downs.pop(migration.version, None)) is not None:
            by_number[number] = MigrationFile(migration.number, migration.version, migration.path, down)
    for version, path in sorted(downs.items()):
        problems.append(f"{path}: an undo file without its migration {version}.sql")
    return [by_number[number] for number in sorted(by_number)], problems


def repeatable_files(directory: Path) -> list[Path]:
    """The directory's R__description.sql files, in name order (the order they run in)."""
    with os.scandir(directory) as entries:
        return sorted(directory / entry.name for entry in entries if REPEATABLE.match(entry.name) and entry.is_file())


def _duplicate_problems(by_number: dict[int, MigrationFile], clashes: list[MigrationFile]) -> list[str]:
    """A line per duplicated number, naming the newer file first (the one to renumber: most
    recently modified, the later name on a tie) and the next free number for it."""
    problems = []
    next_free = max(by_number) + 1 if by_number else 1
    for number in sorted({clash.number for clash in clashes}):
        files = [by_number[number], *(clash for clash in clashes if clash.number == number)]
        files.sort(key=lambda file: (_modified(file.path), file.path.name), reverse=True)
        newest, others = files[0], files[1:]
        prefix, _, description = newest.version.partition("_")
        suggestion = f"{str(next_free).zfill(len(prefix))}_{description}.sql"
        problems.append(
            f"{newest.path}: duplicate migration number {number} "
            f"(also {', '.join(other.path.name for other in others)}); "
            f"if {newest.path.name} is the new one, rename it to {suggestion}"
        )
        next_free += 1
    return problems


def _modified(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def next_migration_path(directory: Path, description: str, timestamp: str) -> Path:
    """Path for a new migration after the existing ones.

    Sequential directories get the next number at the existing width (at least 3 digits);
    directories that already use timestamp prefixes (12+ digits) get `timestamp`.
    """
    slug = _shortened(_slug(description))
    # Names only: the newest migration may still be the unfinished, comment-only file `new` wrote.
    existing = discover(directory)
    widths = [len(m.version.split("_", 1)[0]) for m in existing]
    if widths and max(widths) >= 12:
        prefix = timestamp
    else:
        number = existing[-1].number + 1 if existing else 1
        prefix = str(number).zfill(max([3, *widths]))
    return directory / f"{prefix}_{slug}.sql"


def _slug(description: str) -> str:
    """The description as a file-name part: lower-case ASCII letters and digits joined by `_`.

    Accented Latin letters keep their base letter ("Café crème" -> cafe_creme). File names stay
    ASCII on purpose: the version recorded in the database is the file name, and non-ASCII names
    change bytes between systems (macOS may store é decomposed), which would make an applied
    migration look new and run it again. A description with no Latin letters or digits is
    refused with that reason.
    """
    decomposed = unicodedata.normalize("NFKD", description)
    ascii_text = "".join(char for char in decomposed if not unicodedata.combining(char))
    ascii_text = ascii_text.translate(_LIGATURES)
    untranslatable = sorted({char for char in ascii_text if char.isalnum() and not char.isascii()})
    if untranslatable:
        raise InvalidMigrationError(
            f"migration description {description!r}: {''.join(untranslatable)} cannot be written in a file name "
            "here. Migration file names use ASCII letters and digits only: the name is the version recorded in "
            "the database, and non-ASCII names can change bytes between systems (macOS may decompose them), "
            "which would run an applied migration again. Describe it in Latin letters."
        )
    slug = re.sub(r"[^a-z0-9]+", "_", ascii_text.lower()).strip("_")
    if not slug:
        raise InvalidMigrationError(f"migration description {description!r} has no letters or digits")
    return slug


def is_shortened(description: str) -> bool:
    """Whether a new migration's file name leaves part of ``description`` out."""
    return len(_slug(description)) > SLUG_MAX_CHARS


# Longer descriptions are cut at a word: a name stays readable in a listing and far below the
# 255 bytes file systems allow (a 300-character description would not fit).
SLUG_MAX_CHARS = 60


def _shortened(slug: str) -> str:
    if len(slug) <= SLUG_MAX_CHARS:
        return slug
    cut = slug.rfind("_", 0, SLUG_MAX_CHARS + 1)
    return slug[:cut] if cut > 0 else slug[:SLUG_MAX_CHARS]


# Letters NFKD does not decompose into a base letter plus accents.
_LIGATURES = str.maketrans({"ß": "ss", "æ": "ae", "Æ": "AE", "ø": "o", "Ø": "O", "œ": "oe", "Œ": "OE",
                            "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "þ": "th", "Þ": "TH", "ı": "i"})
