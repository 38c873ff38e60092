"""Typed readers for environment variables.

Every setting comes from the environment. A bad value stops start-up with a message that names
the variable and says what a good value looks like, instead of surfacing later as a strange error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from django.core.exceptions import ImproperlyConfigured

if TYPE_CHECKING:
    from dj_database_url import DBConfig

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

# Every variable the settings read, with its default as documented in the README.
# docker-compose.yml and the README are checked against this list by the tests.
DOCUMENTED_VARIABLES: dict[str, str] = {}


def _raw(name: str, default: str | None) -> str | None:
    DOCUMENTED_VARIABLES.setdefault(name, "" if default is None else default)
    return os.environ.get(name, default)


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str | None:
    value = _raw(name, default)
    if required and not value:
        raise ImproperlyConfigured(f"{name} must be set.")
    return value


def env_bool(name: str, default: bool) -> bool:
    value = (_raw(name, "1" if default else "0") or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={value!r} is not a boolean; use 1/0, true/false, yes/no.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name, str(default)) or ""
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={value!r} is not an integer.") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name}={number} must be at least {minimum}.")
    return number


def env_list(name: str, default: str) -> list[str]:
    value = _raw(name, default) or ""
    return [item.strip() for item in value.split(",") if item.strip()]


def env_path(name: str, default: Path) -> Path:
    value = _raw(name, str(default)) or str(default)
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ImproperlyConfigured(f"{name}={value!r} exists and is not a directory.")
    return path.resolve()


SUPPORTED_DATABASE_SCHEMES = ("sqlite", "postgres", "postgresql", "pgsql")
SUPPORTED_BROKER_SCHEMES = ("filesystem", "redis", "rediss", "memory", "amqp", "pyamqp")


def database_config(url: str, *, prepared_statements: bool = True) -> DBConfig:
    """A Django DATABASES entry from DATABASE_URL (SQLite gets WAL mode and immediate locks).

    On PostgreSQL, prepared_statements lets config.db.prepared_cursor's statements be prepared
    (turn it off behind a connection pooler that cannot keep them, such as PgBouncer < 1.21 in
    transaction mode); the ORM's own queries are never prepared.
    """
    import dj_database_url

    scheme = urlparse(url).scheme
    if scheme not in SUPPORTED_DATABASE_SCHEMES:
        raise ImproperlyConfigured(
            f"DATABASE_URL scheme {scheme!r} is not supported; use sqlite:///path/to/db.sqlite3 "
            "or postgres://user:password@host:5432/name."
        )
    try:
        config = dj_database_url.parse(url, conn_max_age=60)
    except ValueError as error:
        raise ImproperlyConfigured(f"DATABASE_URL {url!r} cannot be parsed: {error}") from None
    if config["ENGINE"] == "django.db.backends.sqlite3":
        if not config["NAME"]:
            raise ImproperlyConfigured("DATABASE_URL for SQLite needs a file path.")
        Path(config["NAME"]).parent.mkdir(parents=True, exist_ok=True)
        config["CONN_MAX_AGE"] = 0
        config["OPTIONS"] = {
            # WAL lets the web server read while a worker writes; IMMEDIATE takes the write lock
            # when a transaction starts, so two writers queue instead of failing mid-transaction.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        }
        # A file (not :memory:) so that a worker process in the tests can share the test database.
        config["TEST"] = {"NAME": str(Path(config["NAME"]).with_name("test_tandem.sqlite3"))}
    else:
        # psycopg prepares a statement the fifth time a connection runs it; None: never.
        config.setdefault("OPTIONS", {})["prepare_threshold"] = 5 if prepared_statements else None
    return config


def broker_url_checked(url: str) -> str:
    scheme = urlparse(url).scheme
    if scheme not in SUPPORTED_BROKER_SCHEMES:
        raise ImproperlyConfigured(
            f"CELERY_BROKER_URL scheme {scheme!r} is not supported; use filesystem:// (embedded, "
            "the default) or redis://host:6379/0."
        )
    return url
