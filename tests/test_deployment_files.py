"""docker-compose.yml and the README agree with the settings (no engine runs here to try them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from django.conf import settings

from config.env import DOCUMENTED_VARIABLES, broker_url_checked, database_config

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = ["migrate", "web", "worker", "gpu-worker", "policy-server", "beat", "flower"]


def _command(service: str) -> str:
    command = SERVICES[service]["command"]
    return " ".join(command) if isinstance(command, list) else command


def _substitute(value: str) -> str:
    """Resolve compose's ${NAME:-default} / ${NAME:?message} with placeholder values."""
    return re.sub(r"\$\{(\w+)(:[-?][^}]*)?\}", lambda m: f"example-{m.group(1).lower()}", value)


def test_every_production_service_is_there():
    assert set(SERVICES) >= {"postgres", "redis", *APP_SERVICES}


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_only_set_variables_the_settings_read(service):
    unknown = set(SERVICES[service]["environment"]) - set(DOCUMENTED_VARIABLES)
    assert not unknown, f"{service} sets variables no setting reads: {unknown}"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_app_services_point_at_postgres_and_redis_with_values_the_settings_accept(service):
    environment = SERVICES[service]["environment"]
    database = database_config(_substitute(environment["DATABASE_URL"]))
    assert database["ENGINE"] == "django.db.backends.postgresql"
    assert database["HOST"] == "postgres"
    assert broker_url_checked(environment["CELERY_BROKER_URL"]).startswith("redis://redis:")
    assert environment["SECRET_KEY"].startswith("${SECRET_KEY:?")  # required, never defaulted


def test_commands_run_the_right_processes_on_the_right_queues():
    assert _command("web").startswith("gunicorn config.wsgi")
    assert "celery -A config worker -Q default" in _command("worker")
    assert "-Q gpu" in _command("gpu-worker") and "--pool solo" in _command("gpu-worker")
    assert "celery -A config beat" in _command("beat")
    assert "celery -A config flower" in _command("flower")
    assert "manage.py serve" in _command("policy-server")
    assert "manage.py migrate" in _command("migrate")
    assert set(settings.CELERY_TASK_QUEUES_NAMES) == {"default", "gpu"}


def test_gpu_worker_reserves_an_nvidia_device():
    devices = SERVICES["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]


@pytest.mark.parametrize(
    "service", ["postgres", "redis", "web", "worker", "gpu-worker", "policy-server", "flower"]
)
def test_long_running_services_have_health_checks(service):
    assert SERVICES[service]["healthcheck"]["test"]


def test_web_health_check_uses_the_health_endpoint():
    assert "/healthz" in " ".join(SERVICES["web"]["healthcheck"]["test"])


def test_policy_server_is_healthy_once_its_models_are_loaded():
    assert "/readyz" in " ".join(SERVICES["policy-server"]["healthcheck"]["test"])


def test_database_and_artifacts_live_on_volumes():
    assert {"postgres-data", "artifacts"} <= set(COMPOSE["volumes"])
    assert any("postgres-data:" in v for v in SERVICES["postgres"]["volumes"])
    assert any(v.startswith("artifacts:") for v in SERVICES["web"]["volumes"])


def test_readme_documents_every_setting():
    readme = (ROOT / "README.md").read_text()
    missing = [name for name in DOCUMENTED_VARIABLES if f"`{name}`" not in readme]
    assert not missing, f"README lacks settings: {missing}"
