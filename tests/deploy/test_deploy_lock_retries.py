"""Lock retries in a deploy: through the real handlers, with the runner's TLS connection (and its
lock watcher's) to a real PostgreSQL, a session of the application holding a lock all along."""

from __future__ import annotations

import time

import psycopg
import pytest

from tests.deploy.conftest import Deployment
from tests.deploy.support import failed

from .test_handlers import FIRST, THIRD


def test_a_deploy_retries_a_lock_timeout_only_within_the_runners_time(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from schema_migrations import runner

    monkeypatch.setattr(runner, "MARGIN_SECONDS", 1.0)
    monkeypatch.setattr(runner, "LOCK_TIMEOUT", "1s")
    deployment.write(FIRST)
    deployment.create()
    old = deployment.properties()
    deployment.write(THIRD)
    deployment.runner_seconds = 10  # 8 s after the answer's reserve: room for three or four attempts, not six

    with psycopg.connect(deployment.database.admin_conninfo, application_name="nightly-report") as blocker:
        blocker.execute("SELECT count(*), 'report-query-text' FROM users")
        started = time.monotonic()
        message = failed(deployment.update(old))
        elapsed = time.monotonic() - started
        assert blocker.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # left alone
        blocker_pid = blocker.info.backend_pid

    assert elapsed < 10
    assert "003_add_phone failed: SQLSTATE 55P03: canceling statement due to lock timeout" in message
    assert f"waiting for AccessExclusiveLock on public.users, blocked by pid {blocker_pid} (user " in message
    # The runner's login is no superuser and has no pg_read_all_stats: another role's state is hidden.
    assert "application nightly-report, state not visible to this role)" in message
    assert "this run's time budget leaves no room for another attempt" in message
    logged = capsys.readouterr().out
    assert "⏳ 003_add_phone (statement at line 1): lock timeout (attempt 1 of 6), waiting for AccessExclusiveLock" \
           " on public.users" in logged
    assert "report-query-text" not in message + logged
    assert deployment.applied_versions() == ["001_create_users", "002_add_name"]
