"""Synth time of both stacks with and without the deploy-time migration resource, in one run.

    scripts/synth-benchmark.sh                 5 repetitions of each, alternating
    scripts/synth-benchmark.sh --reps 3 --json /tmp/synth.json

Each sample is a fresh Python process that does what `cdk synth` has app.py do: build the app with
cdk.json's context (cdk-nag plugin included), add both environments' stacks and synthesize them into
a throwaway cloud assembly. The two variants differ only in ``create_stacks(schema_migration=...)``;
which goes first alternates between repetitions. The child reports where its time went (importing
aws_cdk and the stacks, building the constructs, the migration asset lookup, ``app.synth()``); the
parent times the whole process (wall, and CPU from wait4). The migration asset must already be built
(any synth builds it): a cold build downloads psycopg's wheels once and is not what a deploy repeats.

A benchmark, not a test: it fails only if a synth fails, never on a timing. Compare figures within
one run; the machine's load moves absolute seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("with", "without")
# The target for the asset: a synth with a built asset adds under a second.
ASSET_TARGET_SECONDS = 1.0


def sample(variant: str, outdir: Path) -> dict[str, float]:
    """One synth, in this process; returns seconds per phase (run as the child)."""
    started = time.perf_counter()
    sys.path.insert(0, str(ROOT))
    from aws_cdk import App

    from stacks.application import create_stacks
    from stacks.database_stack import project_migration_asset

    imported = time.perf_counter()
    asset_seconds = 0.0
    if variant == "with":
        before = time.perf_counter()
        project_migration_asset()  # cached: what create_stacks then finds at once
        asset_seconds = time.perf_counter() - before
    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    app = App(context=context, outdir=str(outdir))
    before = time.perf_counter()
    stacks = create_stacks(app, schema_migration=variant == "with")
    built = time.perf_counter()
    app.synth()
    synthesized = time.perf_counter()
    assert len(stacks) == 2 and all((outdir / f"{s.stack_name}.template.json").is_file() for s in stacks)
    return {
        "import": imported - started,
        "asset": asset_seconds,
        "construct": built - before,
        "synth": synthesized - built,
    }


def run_child(variant: str) -> dict[str, float]:
    """A fresh process for one sample; adds its wall time (interpreter and jsii start included)."""
    env = dict(os.environ)
    node_bin = ROOT / "node_modules" / ".bin"
    env["PATH"] = f"{node_bin}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("JSII_NODE", str(node_bin / "node"))
    env.setdefault("JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION", "1")
    with tempfile.TemporaryDirectory(prefix="synth-benchmark-") as outdir, tempfile.TemporaryFile("w+") as log:
        command = [sys.executable, "-P", __file__, "--sample", variant, outdir]
        started = time.perf_counter()
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
        assert child.stdout is not None
        stdout = child.stdout.read()
        _, status, usage = os.wait4(child.pid, 0)  # CPU of the child and the jsii node process it waited for
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        if child.returncode != 0:
            log.seek(0)
            raise SystemExit(f"synth ({variant} the migration) failed:\n{log.read()[-4000:]}")
    phases: dict[str, float] = json.loads(stdout.strip().splitlines()[-1])
    return {**phases, "wall": wall, "cpu": usage.ru_utime + usage.ru_stime}


def summarize(samples: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Median and minimum of every phase, per variant."""
    summary: dict[str, dict[str, float]] = {}
    for variant, runs in samples.items():
        for phase in runs[0]:
            values = [run[phase] for run in runs]
            summary.setdefault(variant, {})[f"{phase}_median"] = statistics.median(values)
            summary[variant][f"{phase}_min"] = min(values)
    return summary


def report(summary: dict[str, dict[str, float]], reps: int) -> str:
    with_, without = summary["with"], summary["without"]
    lines = [
        f"Synth of both stacks (cdk-nag included), {reps} fresh processes per variant, median (min), seconds:",
        "",
        f"{'phase':<10} {'without migration':>20} {'with migration':>20} {'difference':>12}",
    ]
    for phase in ("wall", "cpu", "import", "asset", "construct", "synth"):
        a, b = without[f"{phase}_median"], with_[f"{phase}_median"]
        lines.append(
            f"{phase:<10} {a:>11.2f} ({without[f'{phase}_min']:.2f}) {b:>11.2f} ({with_[f'{phase}_min']:.2f})"
            f" {b - a:>+11.2f}"
        )
    asset = with_["asset_median"]
    verdict = "met" if asset < ASSET_TARGET_SECONDS else "NOT met"
    lines += [
        "",
        f"with/without: wall {with_['wall_median'] / without['wall_median']:.2f}x "
        f"({with_['wall_median'] - without['wall_median']:+.2f} s), "
        f"CPU {with_['cpu_median'] / without['cpu_median']:.2f}x "
        f"({with_['cpu_median'] - without['cpu_median']:+.2f} s)",
        f"migration asset, already built: {asset * 1000:.0f} ms to find it "
        f"(target: a second synth adds under {ASSET_TARGET_SECONDS:.0f} s for the asset: {verdict})",
        "'cpu' is the synth process and its jsii node process (user+sys): steadier than wall on a busy machine",
        f"python {sys.version.split()[0]}; compare within one run only",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="synth-benchmark.sh", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5, help="samples per variant (default 5)")
    parser.add_argument("--json", type=Path, help="also write the samples and summary here")
    parser.add_argument("--sample", nargs=2, metavar=("VARIANT", "OUTDIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.sample:
        variant, outdir = args.sample
        if variant not in VARIANTS:
            parser.error(f"--sample variant must be one of {', '.join(VARIANTS)}")
        print(json.dumps(sample(variant, Path(outdir))))
        return 0
    if args.reps < 1:
        parser.error("--reps must be at least 1")

    print("warming up (builds the migration asset if it is missing)...", file=sys.stderr)
    run_child("with")
    samples: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
    for rep in range(args.reps):
        order = VARIANTS if rep % 2 == 0 else VARIANTS[::-1]
        for variant in order:
            samples[variant].append(run_child(variant))
            print(f"  rep {rep + 1}/{args.reps} {variant:<7} {samples[variant][-1]['wall']:.2f} s", file=sys.stderr)
    summary = summarize(samples)
    print(report(summary, args.reps))
    if args.json:
        document: dict[str, Any] = {"reps": args.reps, "samples": samples, "summary": summary}
        args.json.write_text(json.dumps(document, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
