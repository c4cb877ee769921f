"""Connecting: retries while the server is not there yet (an Aurora cluster resuming from
auto-pause looks like this), no retries for failures that waiting cannot fix."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from database.migrator.errors import ConnectionFailedError
from database.migrator.events import Connected, ConnectRetry, Event
from database.migrator.redaction import password_of, redact_conninfo, scrub
from tests.delayed_proxy import DelayedProxy

from .helpers import apply_dir, write_migrations


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_retries_until_the_server_appears(database_uri: str, tmp_path: Path) -> None:
    parts = urlsplit(database_uri)
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "CREATE TABLE a (id int);"})
    events: list[Event] = []
    with DelayedProxy(parts.port or 5432, delay=1.5) as proxy:
        delayed_uri = database_uri.replace(f":{parts.port}/", f":{proxy.port}/")
        result = apply_dir(delayed_uri, directory, events, connect_timeout=20.0)
    retries = [e for e in events if isinstance(e, ConnectRetry)]
    assert retries and all("refused" in e.reason.lower() for e in retries)
    assert [e.attempt for e in retries] == list(range(1, len(retries) + 1))
    assert any(isinstance(e, Connected) for e in events)
    assert [a.version for a in result.applied] == ["001_a"]


def test_gives_up_after_the_total_timeout(tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;"})
    started = time.monotonic()
    with pytest.raises(ConnectionFailedError, match=r"could not connect after \d+ attempts"):
        apply_dir(f"postgresql://nobody@127.0.0.1:{free_port()}/db", directory, connect_timeout=1.5)
    assert time.monotonic() - started < 6


def test_failures_waiting_cannot_fix_are_not_retried(database_uri: str, tmp_path: Path) -> None:
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;"})
    missing_database = database_uri.rsplit("/", 1)[0] + "/no_such_database"
    events: list[Event] = []
    with pytest.raises(ConnectionFailedError, match='database "no_such_database" does not exist'):
        apply_dir(missing_database, directory, events, connect_timeout=30.0)
    assert not any(isinstance(e, ConnectRetry) for e in events)


def test_tls_options_pass_through_to_libpq(database_uri: str, tmp_path: Path) -> None:
    """The throwaway server has no TLS: sslmode=disable connects, sslmode=require is refused by
    libpq at once (not retried), which shows the URI's TLS options reach the driver."""
    directory = write_migrations(tmp_path / "m", {"001_a.sql": "SELECT 1;"})
    assert apply_dir(f"{database_uri}?sslmode=disable", directory).applied
    events: list[Event] = []
    with pytest.raises(ConnectionFailedError, match="server does not support SSL"):
        apply_dir(f"{database_uri}?sslmode=require", directory, events, connect_timeout=30.0)
    assert not any(isinstance(e, ConnectRetry) for e in events)


@pytest.mark.parametrize(
    ("conninfo", "redacted", "password"),
    [
        ("postgresql://webapp:p%40ss@db.example:5432/users", "postgresql://webapp:***@db.example:5432/users", "p@ss"),
        ("postgres://u:secret@h/d?sslmode=require", "postgres://u:***@h/d?sslmode=require", "secret"),
        ("postgresql://u@h/d?password=secret&sslmode=verify-full", "postgresql://u@h/d?password=***&sslmode=verify-full",
         "secret"),
        ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d", "secret"),
        ("host=h password='se cret' dbname=d", "host=h password=*** dbname=d", "se cret"),
        ("postgresql://u@h/d", "postgresql://u@h/d", None),
    ],
)
def test_redaction(conninfo: str, redacted: str, password: str | None) -> None:
    assert redact_conninfo(conninfo) == redacted
    assert password_of(conninfo) == password
    if password is not None:
        assert scrub(f"server said: {password}!", password) == "server said: ***!"


@pytest.mark.parametrize(
    ("text", "secret", "shown", "scrubbed"),
    [
        ('role "webapp" does not exist', "webapp", ("webapp", "db.example", "users"), 'role "webapp" does not exist'),
        ("could not translate host name: Servname not supported", "p", (), None),
        ("password authentication failed for user app", "supersecret", (), None),
        ("server said: supersecret!", "supersecret", (), "server said: ***!"),
        ("supersecretive is a word", "supersecret", (), None),
        ("dsn postgresql://app:p@db.example/x refused", "p", (), "dsn postgresql://app:***@db.example/x refused"),
        ("options host=h password=p dbname=d", "p", (), "options host=h password=*** dbname=d"),
        ("uri postgresql://u@h/d?password=abc&sslmode=require", "abc", (), "uri postgresql://u@h/d?password=***&sslmode=require"),
    ],
    ids=["user-equals-password", "one-letter", "absent", "whole-word", "inside-a-word", "uri", "keyword", "query"],
)
def test_scrub_removes_the_secret_not_innocent_words(
    text: str, secret: str, shown: tuple[str, ...], scrubbed: str | None
) -> None:
    assert scrub(text, secret, shown=shown) == (text if scrubbed is None else scrubbed)
