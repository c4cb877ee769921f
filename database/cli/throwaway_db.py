"""A throwaway PostgreSQL server: scripts/local-db.sh started with its state in a directory of its
own and a free port, destroyed afterwards. The pinned server (POSTGRES_VERSION, from
package-lock.json), with the script's handling of root; used by the pull-request schema check and
the test fixtures."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

LOCAL_DB = Path(__file__).resolve().parents[2] / "scripts" / "local-db.sh"
DATABASE = "testdriven_dev"  # the database scripts/local-db.sh creates


class ServerStartError(RuntimeError):
    """scripts/local-db.sh could not start the server; the message carries its output."""


@dataclass(frozen=True)
class ThrowawayServer:
    port: int
    data_dir: Path  # owned by the server's OS user (nobody, as root)

    @property
    def uri(self) -> str:
        """The database scripts/local-db.sh created, as its superuser (trust authentication)."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def throwaway_server(state: Path) -> Iterator[ThrowawayServer]:
    """A server with its state in ``state`` (created; deleted with the server's data at the end)."""
    environment = {**os.environ, "LOCAL_PG_DIR": str(state), "LOCAL_PG_PORT": str(free_port())}
    try:
        started = subprocess.run([str(LOCAL_DB), "start"], env=environment, capture_output=True, text=True)
        if started.returncode != 0:
            raise ServerStartError(f"scripts/local-db.sh start failed:\n{started.stdout}{started.stderr}")
        recorded = state / "datadir"  # as root the data lives where the server's OS user can reach it
        data = Path(recorded.read_text().strip()) if recorded.is_file() else state / "data"
        yield ThrowawayServer(int((state / "port").read_text().strip()), data)
    finally:
        subprocess.run([str(LOCAL_DB), "destroy"], env=environment, capture_output=True)
