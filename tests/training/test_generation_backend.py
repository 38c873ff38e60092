"""A round written through the `openai` generation backend: against Tandem's own policy server
over real HTTP, with the adapter loaded through vLLM's runtime LoRA endpoints; the checks that
name a missing server flag; retries; and a server killed mid-round."""

from __future__ import annotations

import httpx
import pytest
from rest_framework.authtoken.models import Token

from annotate.models import Comparison, Response, ResponseSource
from annotate.services import round_close
from registry.models import ModelVersion
from registry.selectors import active_policy
from registry.services import version_promote
from tests.factories import PromptFactory, UserFactory
from tests.test_worker import _database_url_of_test_database
from tests.training.helpers import TINY_GENERATION
from tests.training.serving_helpers import add_policy_version, free_port, start_server, stop_server
from training import pipeline, runner, services
from training.engine.config import GenerationConfig
from training.engine.remote import RemoteBackend, RemoteError, RemoteGenerator
from training.models import RunStatus
from training.project_settings import training_settings_update

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

KEY_VARIABLE = "TANDEM_TEST_SERVER_KEY"


@pytest.fixture
def staff_key(monkeypatch) -> str:
    # The worker's service account: loading adapters by path takes a staff token.
    key = Token.objects.create(user=UserFactory(username="worker-bot", is_staff=True)).key
    monkeypatch.setenv(KEY_VARIABLE, key)
    return key


def use_server(project, url: str, **overrides) -> None:
    backend = {
        "kind": "openai", "base_url": f"{url}/v1", "model": f"{project.slug}@v0",
        "adapters": "vllm", "api_key_env": KEY_VARIABLE, "max_retries": 1,
    } | overrides  # fmt: skip
    training_settings_update(
        project=project, values={**project.training_settings, "generation_backend": backend}
    )
    project.generation_settings = {**TINY_GENERATION, "batch_size": 2}  # chunks of 4 prompts
    project.save()


def promoted_adapter(project, base, folder, number: int, seed: int) -> ModelVersion:
    version = add_policy_version(project, base, folder, seed=seed, number=number)
    version_promote(version=version)
    return version


def generated_round(project, prompts: int = 6):
    for i in range(prompts):
        PromptFactory(project=project, text=f"w{i} w{i + 1} w{i + 2}")
    round_, run = pipeline.round_start(project=project)
    return round_, run


def served_names(url: str, key: str) -> set[str]:
    models = httpx.get(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    return {m["id"] for m in models["data"]}


def test_a_round_written_by_a_server_has_the_provenance_of_a_local_one(
    server, served_project, tiny_base, settings, staff_key
):
    v1 = promoted_adapter(served_project, tiny_base, settings.ARTIFACTS_DIR / "v1", 1, seed=3)
    use_server(served_project, server)
    round_, run = generated_round(served_project)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED, run.error

    answers = Response.objects.filter(round=round_)
    assert answers.count() == 6 * TINY_GENERATION["samples_per_prompt"]
    assert {a.model_version_id for a in answers} == {v1.pk}
    assert {a.source for a in answers} == {ResponseSource.POLICY}
    assert all(a.token_count and a.token_count >= 1 for a in answers)
    assert all(a.generation_settings["backend"]["kind"] == "openai" for a in answers)
    assert Comparison.objects.filter(round=round_).count() == 6
    loaded = [n for n in served_names(server, staff_key) if n.startswith("tandem-helpful-v1-")]
    assert len(loaded) == 1  # the version's adapter, under a name of its own

    # The same round written locally records the same fields (all but where it was written).
    local_round_answers = _written_locally(served_project, round_)
    assert set(local_round_answers[0].generation_settings) == set(
        answers[0].generation_settings
    ) - {"backend"}

    # A newer version gets a fresh name; the retired version's adapter is unloaded.
    v2 = promoted_adapter(served_project, tiny_base, settings.ARTIFACTS_DIR / "v2", 2, seed=4)
    round_close(round=round_)
    use_server(served_project, server)
    round_2, run_2 = generated_round(served_project, prompts=0)
    assert runner.training_run_execute(run_id=run_2.pk) == RunStatus.SUCCEEDED
    assert {a.model_version_id for a in Response.objects.filter(round=round_2)} == {v2.pk}
    names = served_names(server, staff_key)
    assert not any(n.startswith("tandem-helpful-v1-") for n in names)
    assert any(n.startswith("tandem-helpful-v2-") for n in names)


def _written_locally(project, round_):
    training_settings_update(
        project=project,
        values={k: v for k, v in project.training_settings.items() if k != "generation_backend"},
    )
    Response.objects.filter(round=round_).delete()
    run = services.training_run_create(project=project, kind="generate", round=round_)
    assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
    return list(Response.objects.filter(round=round_))


def test_a_killed_server_fails_the_run_cleanly_and_a_retry_finishes_it(
    django_db_blocker, served_project, tiny_base, settings, server_artifacts, staff_key,
    monkeypatch,
):  # fmt: skip
    port = free_port()
    process = start_server(_database_url_of_test_database(), server_artifacts, port)
    url = f"http://127.0.0.1:{port}"
    promoted_adapter(served_project, tiny_base, settings.ARTIFACTS_DIR / "v1", 1, seed=3)
    use_server(served_project, url, max_retries=1)
    round_, run = generated_round(served_project, prompts=12)

    original = RemoteGenerator.generate
    calls = []

    def generate_then_kill(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == 1:  # the first chunk is written; the server dies before the second
            stop_server(process)
        return result

    monkeypatch.setattr(RemoteGenerator, "generate", generate_then_kill)
    try:
        assert runner.training_run_execute(run_id=run.pk) == RunStatus.FAILED
        run.refresh_from_db()
        assert f"127.0.0.1:{port}" in run.error
        per_prompt = TINY_GENERATION["samples_per_prompt"]
        assert Response.objects.filter(round=round_).count() == 4 * per_prompt  # one whole chunk
        assert not Comparison.objects.filter(round=round_).exists()

        process = start_server(_database_url_of_test_database(), server_artifacts, port)
        services.training_run_retry(run=run)
        assert runner.training_run_execute(run_id=run.pk) == RunStatus.SUCCEEDED
        answers = Response.objects.filter(round=round_)
        assert answers.count() == 12 * per_prompt
        assert answers.values("prompt").distinct().count() == 12
        assert Comparison.objects.filter(round=round_).count() == 12
    finally:
        stop_server(process)


# --- the client on its own, against scripted answers ---------------------------------------------


def scripted(routes):
    """An httpx transport answering (method, path) from `routes`, each a list used in turn."""
    seen = []

    def handle(request: httpx.Request) -> httpx.Response:
        key = (request.method, request.url.path)
        seen.append(key)
        answers = routes[key]
        status, body = answers.pop(0) if len(answers) > 1 else answers[0]
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle), seen


def client(transport, **backend) -> RemoteGenerator:
    values = {"base_url": "http://engine/v1", "backoff_seconds": 0.0, "max_retries": 2} | backend
    return RemoteGenerator(RemoteBackend(**values), transport=transport)


def test_a_server_without_runtime_lora_says_which_flag_is_missing():
    transport, _ = scripted({
        ("GET", "/v1/models"): [(200, {"data": [{"id": "base"}]})],
        ("POST", "/v1/unload_lora_adapter"): [(404, {"detail": "Not Found"})],
    })  # fmt: skip
    with pytest.raises(RemoteError, match="VLLM_ALLOW_RUNTIME_LORA_UPDATING"):
        client(transport).check(adapters=True)
    client(transport).check(adapters=False)  # the base alone needs no LoRA endpoints


def test_a_refused_key_names_the_setting_that_holds_it():
    transport, _ = scripted({("GET", "/v1/models"): [(401, {"error": {"message": "bad key"}})]})
    with pytest.raises(RemoteError, match="api_key_env"):
        client(transport).check(adapters=False)


def test_a_busy_server_is_retried_with_backoff_and_then_answers():
    answer = {"choices": [{"index": i, "message": {"content": f"a{i}"}, "finish_reason": "stop"}
                          for i in range(2)]}  # fmt: skip
    transport, seen = scripted({
        ("POST", "/v1/chat/completions"): [(503, {"error": {"message": "busy"}}),
                                           (429, {"error": {"message": "slow down"}}),
                                           (200, answer)],
    })  # fmt: skip
    config = GenerationConfig(samples_per_prompt=2, max_new_tokens=4)
    written = client(transport, concurrency=1).generate("base", ["hello"], config)
    assert [[a.text for a in row] for row in written] == [["a0", "a1"]]
    assert seen.count(("POST", "/v1/chat/completions")) == 3


def test_a_server_that_keeps_failing_raises_after_its_retries():
    transport, seen = scripted({("POST", "/v1/chat/completions"): [(502, {"error": {}})]})
    with pytest.raises(RemoteError, match="3 tries"):
        client(transport, concurrency=1).generate("base", ["hello"], GenerationConfig())
    assert len(seen) == 3


def test_a_version_with_an_adapter_cannot_be_written_by_a_server_without_adapters(
    served_project, tiny_base, settings
):
    from training.generation import served_name
    from training.project_settings import GenerationBackendSettings

    v1 = add_policy_version(served_project, tiny_base, settings.ARTIFACTS_DIR / "v1", seed=1)
    transport, _ = scripted({("GET", "/v1/models"): [(200, {"data": []})]})
    backend = GenerationBackendSettings(kind="openai", base_url="http://x/v1", model="m",
                                        adapters="none")  # fmt: skip
    with pytest.raises(RemoteError, match="adapters is 'none'"):
        served_name(client(transport), served_project, v1, backend)
    base = active_policy(project_id=served_project.pk)
    assert served_name(client(transport), served_project, base, backend) == "m"
