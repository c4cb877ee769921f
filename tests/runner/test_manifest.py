"""The migrations manifest: what the deploy-time custom resource carries in its properties."""

from __future__ import annotations

from pathlib import Path

import pytest

from database.migrator.errors import InvalidMigrationError
from database.migrator.manifest import build_manifest


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text, encoding="utf-8")
    return directory


def test_lists_the_newest_files_and_digests_all(tmp_path: Path) -> None:
    directory = write(tmp_path, {f"{n:03d}_step.sql": f"SELECT {n};\n" for n in range(1, 8)})
    manifest = build_manifest(directory, window=3)
    assert manifest.count == 7
    assert manifest.latest == "007_step"
    assert list(manifest.recent) == ["005_step", "006_step", "007_step"]
    assert all(len(short) == 12 for short in manifest.recent.values())


def test_digest_changes_with_any_file_even_outside_the_window(tmp_path: Path) -> None:
    directory = write(tmp_path, {f"{n:03d}_step.sql": f"SELECT {n};\n" for n in range(1, 8)})
    before = build_manifest(directory, window=2)
    (directory / "001_step.sql").write_text("SELECT 'edited';\n", encoding="utf-8")
    after = build_manifest(directory, window=2)
    assert after.digest != before.digest
    assert after.recent == before.recent


def test_line_endings_alone_change_nothing(tmp_path: Path) -> None:
    directory = write(tmp_path, {"001_a.sql": "SELECT 1;\nSELECT 2;\n"})
    before = build_manifest(directory)
    (directory / "001_a.sql").write_bytes(b"SELECT 1;\r\nSELECT 2;\r\n")
    assert build_manifest(directory) == before


def test_empty_directory_and_bad_files(tmp_path: Path) -> None:
    empty = build_manifest(write(tmp_path / "empty", {}))
    assert (empty.count, empty.latest, empty.recent) == (0, None, {})
    with pytest.raises(InvalidMigrationError, match=r"002_empty\.sql"):
        build_manifest(write(tmp_path / "bad", {"001_a.sql": "SELECT 1;", "002_empty.sql": "-- nothing\n"}))
