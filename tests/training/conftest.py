from __future__ import annotations

import pytest

from registry.selectors import active_policy
from tests.engine.tiny import save_tiny_llama
from tests.training.helpers import TINY_GENERATION, TINY_TRAINING
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
