"""Redis is killed and restarted empty in the middle of a round's chain: the worker reconnects,
the safety net sends again what the broker lost, and every run finishes once.

A Redis of its own (port chosen here, no persistence: the worst case, every message lost), so
the suite's broker is never touched; the worker is a real `celery worker` process.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import pytest
from celery import Celery

from annotate.models import Comparison, RoundStatus
from annotate.services import round_open
from registry.models import ModelKind, ModelVersion
from tests.training.helpers import judged_pairs
from tests.training.test_worker_kill import start_worker
from training import pipeline, services
from training.models import RunKind, RunStatus, TrainingRun

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

REDIS_SERVER = shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _start_redis(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [REDIS_SERVER, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        with socket.socket() as client:
            if client.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.1)
    server.kill()
    raise AssertionError("redis-server did not start")


@pytest.fixture
def own_broker(monkeypatch):
    """A private Redis, and this process's sends pointed at it (the worker gets it by env)."""
    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    redis = _start_redis(port)
    # Not the current app: services look their task up on the current app, config's.
    sender = Celery("tandem-test", broker=url, set_as_current=False)

    class SendToOwnBroker:
        def delay(self, run_id: int) -> None:
            # An explicit connection: Celery prefers a CELERY_BROKER_URL in the environment
            # (CI's second pass sets one) over the app's own broker setting.
            with sender.connection_for_write(url) as connection:
                sender.send_task(
                    services.RUN_TRAINING_TASK, args=[run_id], queue="gpu", connection=connection
                )

    monkeypatch.setitem(services.current_app.tasks, services.RUN_TRAINING_TASK, SendToOwnBroker())
    state = {"url": url, "port": port, "redis": redis}
    yield state
    state["redis"].kill()
    state["redis"].wait()


@pytest.mark.skipif(REDIS_SERVER is None, reason="needs redis-server (CI installs it)")
def test_a_chain_survives_redis_restarting_empty(tiny_project, settings, own_broker):
    tiny = tiny_project
    tiny.training_settings = {
        **tiny.training_settings,
        "reward": {**tiny.training_settings["reward"], "max_steps": 600},
        "evaluation": {"heldout_fraction": 0.5, "max_prompts": 4},
    }
    tiny.auto_promote = False
    tiny.save()
    judged_pairs(tiny, 12)
    round_ = round_open(project=tiny)
    Comparison.objects.update(round=round_)
    versions_before = ModelVersion.objects.count()

    worker = start_worker(settings.ARTIFACTS_DIR, CELERY_BROKER_URL=own_broker["url"])
    try:
        reward = pipeline.round_finish(round=round_)
        deadline = time.monotonic() + 180
        while TrainingRun.objects.get(pk=reward.pk).step < 3:
            assert time.monotonic() < deadline and worker.poll() is None, "reward run never ran"
            time.sleep(0.2)

        # A second run waits in the queue behind the first (one worker, prefetch 1); then
        # Redis dies mid-run and comes back empty: the running task's unacked message and the
        # waiting one are gone.
        waiting = services.training_run_create(project=tiny, kind=RunKind.REWARD)
        # The premise, checked: the first run is still mid-way and the second still waits
        # (600 steps of the tiny model take seconds; the send above has returned).
        statuses = dict(TrainingRun.objects.values_list("pk", "status"))
        assert statuses[reward.pk] == RunStatus.RUNNING, statuses
        assert statuses[waiting.pk] == RunStatus.QUEUED, statuses
        own_broker["redis"].kill()
        own_broker["redis"].wait()
        time.sleep(1)
        own_broker["redis"] = _start_redis(own_broker["port"])

        deadline = time.monotonic() + 300
        while TrainingRun.objects.exclude(status=RunStatus.SUCCEEDED).exists() or not (
            TrainingRun.objects.filter(kind=RunKind.EVALUATE).exists()
        ):
            assert time.monotonic() < deadline, list(
                TrainingRun.objects.values_list("kind", "status", "error")
            )
            assert worker.poll() is None, worker.stdout.read()
            assert not TrainingRun.objects.filter(status=RunStatus.FAILED).exists()
            services.training_runs_resend_lost(after_seconds=3)  # the beat, on a short fuse
            time.sleep(1)
    finally:
        worker.kill()
        worker.wait()

    chain = TrainingRun.objects.filter(round=round_, chained=True).order_by("pk")
    assert list(chain.values_list("kind", "status", "attempt")) == [
        (RunKind.REWARD, RunStatus.SUCCEEDED, 1),
        (RunKind.DPO, RunStatus.SUCCEEDED, 1),
        (RunKind.EVALUATE, RunStatus.SUCCEEDED, 1),
    ]
    waiting.refresh_from_db()
    assert waiting.status == RunStatus.SUCCEEDED and waiting.enqueue_count >= 2  # sent again
    new_versions = ModelVersion.objects.filter(project=tiny).order_by("pk")[versions_before:]
    assert sorted(v.kind for v in new_versions) == [
        ModelKind.POLICY, ModelKind.REWARD, ModelKind.REWARD
    ]  # fmt: skip
    round_.refresh_from_db()
    assert round_.status in (RoundStatus.CLOSED, RoundStatus.TRAINED)
