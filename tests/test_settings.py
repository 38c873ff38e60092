"""Settings come from the environment and fail loudly on bad values."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from config import env

ROOT = Path(__file__).resolve().parent.parent


def _start(**overrides: str) -> subprocess.CompletedProcess:
    """Run `manage.py check` in a fresh process with the given environment."""
    environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL",)}
    environment.update(overrides)
    return subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DEBUG", "maybe", "DEBUG='maybe' is not a boolean"),
        ("LEASE_SECONDS", "ten", "LEASE_SECONDS='ten' is not an integer"),
        ("LEASE_SECONDS", "1", "LEASE_SECONDS=1 must be at least 10"),
        (
            "DATABASE_URL",
            "mysql://root@localhost/x",
            "DATABASE_URL scheme 'mysql' is not supported",
        ),
        ("CELERY_BROKER_URL", "kafka://x", "CELERY_BROKER_URL scheme 'kafka' is not supported"),
    ],
)
def test_bad_environment_value_stops_start_up_with_a_message(name, value, message):
    result = _start(**{name: value})
    assert result.returncode != 0
    assert message in result.stderr


def test_secret_key_is_required_unless_debug():
    result = _start(SECRET_KEY="", DEBUG="0")
    assert result.returncode != 0
    assert "SECRET_KEY must be set unless DEBUG=1" in result.stderr
    assert _start(SECRET_KEY="", DEBUG="1").returncode == 0


def test_artifacts_dir_that_is_a_file_is_refused(tmp_path):
    file = tmp_path / "not-a-dir"
    file.write_text("x")
    result = _start(ARTIFACTS_DIR=str(file))
    assert "ARTIFACTS_DIR=" in result.stderr and "is not a directory" in result.stderr


def test_sqlite_url_gets_wal_and_immediate_transactions(tmp_path):
    config = env.database_config(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    assert "journal_mode=WAL" in config["OPTIONS"]["init_command"]
    assert config["OPTIONS"]["transaction_mode"] == "IMMEDIATE"


def test_postgres_url_is_parsed():
    config = env.database_config("postgres://tandem:pw@db.internal:5433/tandem")
    assert (config["HOST"], config["PORT"], config["NAME"], config["USER"]) == (
        "db.internal",
        5433,
        "tandem",
        "tandem",
    )
    assert config["OPTIONS"]["prepare_threshold"] == 5


def test_prepared_statements_can_be_turned_off_for_poolers():
    config = env.database_config("postgres://db/tandem", prepared_statements=False)
    assert config["OPTIONS"]["prepare_threshold"] is None


def test_env_bool_and_int_readers(monkeypatch):
    # The readers record every name they read; keep these out of the README check's list.
    monkeypatch.setattr(env, "DOCUMENTED_VARIABLES", dict(env.DOCUMENTED_VARIABLES))
    monkeypatch.setenv("TANDEM_TEST_FLAG", "Yes")
    assert env.env_bool("TANDEM_TEST_FLAG", False) is True
    monkeypatch.setenv("TANDEM_TEST_NUMBER", "-3")
    with pytest.raises(ImproperlyConfigured, match="must be at least 0"):
        env.env_int("TANDEM_TEST_NUMBER", 1, minimum=0)


def test_celery_is_configured_for_safe_delivery(settings):
    from config.celery import app

    assert app.conf.task_serializer == "json"
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.task_time_limit and app.conf.task_soft_time_limit
    assert {queue.name for queue in app.conf.task_queues} == {"default", "gpu"}
