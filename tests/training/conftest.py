from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from registry.selectors import active_policy
from tests.engine.tiny import save_tiny_llama
from tests.test_worker import _database_url_of_test_database
from tests.training.helpers import TINY_GENERATION, TINY_TRAINING
from tests.training.serving_helpers import free_port, start_server, stop_server
from training import services


@pytest.fixture
def no_broker(monkeypatch):
    """Runs are executed by the test itself; enqueueing is recorded, not sent."""
    queued: list[int] = []
    monkeypatch.setattr(services, "enqueue_run", queued.append)
    return queued


@pytest.fixture
def tiny_project(project, tmp_path, settings):
    """The `project` role's project on a tiny random Llama for policy and reward model."""
    settings.ARTIFACTS_DIR = tmp_path / "artifacts"
    base = save_tiny_llama(tmp_path / "tiny-llama")
    project.base_model = project.reward_backbone = str(base)
    project.training_settings = {"dpo": TINY_TRAINING, "reward": TINY_TRAINING}
    project.generation_settings = dict(TINY_GENERATION)
    project.save()
    policy = active_policy(project_id=project.pk)
    policy.base_model = str(base)
    policy.save()
    return project


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    # One base folder for the module: the server keeps one copy of each base in memory.
    return save_tiny_llama(tmp_path_factory.mktemp("serving") / "tiny-llama")


@pytest.fixture(scope="module")
def server_artifacts(tmp_path_factory) -> Path:
    """The server's ARTIFACTS_DIR: adapters it loads by path must lie inside it."""
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker, server_artifacts):
    with django_db_blocker.unblock():
        database_url = _database_url_of_test_database()
    port = free_port()
    process = start_server(database_url, server_artifacts, port)
    yield f"http://127.0.0.1:{port}"
    stop_server(process)


@pytest.fixture
def served_project(project, tiny_base, settings, server_artifacts):
    # Inside the server's ARTIFACTS_DIR, fresh per test: what the worker writes, it may load.
    settings.ARTIFACTS_DIR = server_artifacts / uuid.uuid4().hex[:8]
    project.base_model = str(tiny_base)
    project.save()
    policy = active_policy(project_id=project.pk)
    policy.base_model = str(tiny_base)
    policy.save()
    return project
