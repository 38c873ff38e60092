"""A real Celery worker process consumes a task from the configured broker, end to end.

Runs on whatever CELERY_BROKER_URL and DATABASE_URL say: the embedded filesystem broker with
SQLite by default, Redis with PostgreSQL in CI's second pass.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from annotate.models import Assignment, AssignmentStatus
from annotate.tasks import reclaim_expired_leases
from config.celery import app as celery_app
from tests.factories import AssignmentFactory, ComparisonFactory, PromptFactory

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]


def _database_url_of_test_database() -> str:
    """The URL of the database this test runs on, so the worker writes where we read."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{db['NAME']}"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    password = f":{db['PASSWORD']}" if db.get("PASSWORD") else ""
    return f"postgres://{db['USER']}{password}@{db['HOST']}{port}/{db['NAME']}"


def start_worker(extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """A `celery worker` process on the test database, consuming both queues."""
    celery_app.control.purge()  # stale messages from an earlier run would be consumed first
    environment = dict(os.environ, **(extra_env or {}))
    environment["DATABASE_URL"] = _database_url_of_test_database()
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=solo",
            "-Q",
            "default,gpu",
            "--loglevel=INFO",
            "--without-mingle",
            "--without-gossip",
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop_worker(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture
def worker():
    process = start_worker()
    yield process
    stop_worker(process)


def test_worker_process_consumes_a_task_that_writes_to_the_database(worker):
    comparison = ComparisonFactory(prompt=PromptFactory())
    lease = AssignmentFactory(comparison=comparison)
    past = timezone.now() - timedelta(hours=2)
    Assignment.objects.filter(pk=lease.pk).update(
        leased_at=past, expires_at=past + timedelta(minutes=10)
    )
    assert not celery_app.conf.task_always_eager

    reclaim_expired_leases.delay()

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        lease.refresh_from_db()
        if lease.status == AssignmentStatus.EXPIRED:
            break
        assert worker.poll() is None, worker.stdout.read()
        time.sleep(0.5)
    worker.terminate()
    log = worker.communicate(timeout=30)[0]
    assert lease.status == AssignmentStatus.EXPIRED, log
    assert "annotate.tasks.reclaim_expired_leases" in log
