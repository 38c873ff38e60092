"""The policy server as a real process (`manage.py serve`) on the test database, driven by the
official `openai` client: names and tokens, completions and streams, errors, a promotion seen
without a restart, concurrent streams, and the reward endpoint."""

from __future__ import annotations

import threading
import time

import httpx
import openai
import pytest
from rest_framework.authtoken.models import Token

from annotate.models import MemberRole
from annotate.services import membership_set
from registry.models import ModelVersion
from registry.services import version_promote
from tests.factories import ProjectFactory, UserFactory
from tests.training.helpers import TINY_TRAINING, judged_pairs
from tests.training.serving_helpers import add_policy_version
from training import runner, services
from training.models import RunKind, RunStatus
from training.serving.ratelimit import RateLimiter

pytestmark = [pytest.mark.worker, pytest.mark.django_db(transaction=True)]

SEEDED = {"temperature": 1.0, "seed": 5, "max_tokens": 12}


@pytest.fixture
def token(api_client_user) -> str:
    return Token.objects.create(user=api_client_user).key


@pytest.fixture
def client(server, token, served_project) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server}/v1", api_key=token, max_retries=0, timeout=60)


def ask(client, model: str, **extra):
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "w1 w2 w3"}], **(SEEDED | extra)
    )


def test_models_lists_the_names_of_the_tokens_projects_only(client, other_project):
    ids = {m.id for m in client.models.list()}
    assert {"helpful", "helpful@v0"} <= ids
    assert not any(i.startswith("other-team") for i in ids)
    assert client.models.retrieve("helpful").owned_by == "helpful"


def test_a_completion_and_its_stream_write_the_same_text_under_a_seed(client):
    whole = ask(client, "helpful")
    assert whole.model == "helpful@v0"
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in {"stop", "length"}
    assert whole.usage.completion_tokens >= 1
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(ask(client, "helpful", stream=True, stream_options={"include_usage": True}))
    pieces = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    assert len([p for p in pieces if p]) >= 2  # streamed, not one piece at the end
    assert "".join(pieces) == text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert {c.id for c in chunks} == {chunks[0].id}


def test_n_answers_and_stop_strings(client):
    several = ask(client, "helpful", n=3, max_tokens=10)
    texts = [c.message.content for c in several.choices]
    assert [c.index for c in several.choices] == [0, 1, 2]
    assert len(set(texts)) > 1
    words = texts[0].split()
    if len(words) >= 2:
        cut = ask(client, "helpful", n=3, max_tokens=10, stop=[words[1]])
        assert cut.choices[0].message.content == texts[0][: texts[0].index(words[1])]
        assert cut.choices[0].finish_reason == "stop"


def test_tokens_and_names_are_refused_with_the_right_status(server, client, token, other_project):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    with pytest.raises(openai.PermissionDeniedError):
        ask(client, "other-team")
    with pytest.raises(openai.NotFoundError):
        ask(client, "no-such-project")
    with pytest.raises(openai.NotFoundError):
        ask(client, "helpful@v9")
    with pytest.raises(openai.NotFoundError):
        ask(client, "helpful@candidate")  # none yet
    with pytest.raises(openai.BadRequestError) as too_hot:
        ask(client, "helpful", temperature=5)
    assert too_hot.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as too_long:
        ask(client, "helpful", max_tokens=500)  # the tiny model's context is 128
    assert too_long.value.code == "context_length_exceeded"

    raw = httpx.post(
        f"{server}/v1/chat/completions", content=b"{not json",
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert raw.status_code == 400
    assert set(raw.json()["error"]) == {"message", "type", "param", "code"}
    deep = httpx.post(
        f"{server}/v1/chat/completions", content=b"[" * 100_000,
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert deep.status_code == 400
    for strange in ([], {"model": "helpful", "messages": "hi"}, {"model": 3, "messages": []},
                    {"model": "helpful", "messages": [{"role": "user", "content": "x"}], "n": True},
                    {"model": "helpful", "messages": [{"role": "robot", "content": "x"}]},
                    {"model": "helpful", "messages": [{"role": "user", "content": "x"}],
                     "tools": [{"type": "function"}]}):  # fmt: skip
        answer = httpx.post(
            f"{server}/v1/chat/completions", json=strange,
            headers={"Authorization": f"Bearer {token}"},
        )  # fmt: skip
        assert answer.status_code == 400, (strange, answer.text)
    assert httpx.get(f"{server}/v1/nowhere").status_code == 404
    assert "error" in httpx.get(f"{server}/v1/nowhere").json()


def test_a_promotion_changes_what_the_slug_answers_without_a_restart(
    client, served_project, tiny_base, tmp_path
):
    before = ask(client, "helpful", temperature=0).choices[0].message.content
    candidate = add_policy_version(served_project, tiny_base, tmp_path / "v1", seed=3)
    on_candidate = ask(client, "helpful@candidate", temperature=0)
    assert on_candidate.model == "helpful@v1"
    assert on_candidate.choices[0].message.content != before  # the adapter is in the answer

    version_promote(version=candidate)
    promoted_at = time.monotonic()
    after = ask(client, "helpful", temperature=0)
    seen_after = time.monotonic() - promoted_at
    assert after.model == "helpful@v1"
    assert after.choices[0].message.content == on_candidate.choices[0].message.content
    assert seen_after < 5
    # Rolling back is seen the same way, and an old version stays addressable by number.
    version_promote(version=ModelVersion.objects.get(project=served_project, number=0))
    assert ask(client, "helpful", temperature=0).model == "helpful@v0"
    assert ask(client, "helpful@v1", temperature=0).choices[0].message.content != before


def test_sixteen_concurrent_streams_all_complete(client):
    results: dict[int, tuple[str, str | None]] = {}

    def one(i: int) -> None:
        text, reason = "", None
        for chunk in ask(client, "helpful", stream=True, seed=i, max_tokens=16):
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
                reason = chunk.choices[0].finish_reason or reason
        results[i] = (text, reason)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert sorted(results) == list(range(16))
    assert all(reason in {"stop", "length"} for _, reason in results.values())
    alone = ask(client, "helpful", seed=3, max_tokens=16).choices[0].message.content
    assert results[3][0] == alone  # the same seed alone or among fifteen others


def test_reward_scoring_needs_the_projects_token(server, served_project, token, settings):
    served_project.reward_backbone = served_project.base_model
    served_project.training_settings = {"reward": TINY_TRAINING, "dpo": TINY_TRAINING}
    served_project.save()
    judged_pairs(served_project, 6)
    run = services.training_run_create(project=served_project, kind=RunKind.REWARD)
    status = runner.training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert status == RunStatus.SUCCEEDED, run.error

    items = [
        {"messages": [{"role": "user", "content": "w1 w2"}], "answer": "good yes"},
        {"messages": [{"role": "user", "content": "w1 w2"}], "answer": "bad no"},
    ]
    scored = httpx.post(
        f"{server}/v1/rewards", json={"model": "helpful", "items": items},
        headers={"Authorization": f"Bearer {token}"}, timeout=60,
    )  # fmt: skip
    assert scored.status_code == 200, scored.text
    data = scored.json()["data"]
    assert [d["index"] for d in data] == [0, 1]
    assert all(isinstance(d["score"], float) for d in data)

    stranger = UserFactory(username="stranger")
    other = ProjectFactory(slug="elsewhere")
    membership_set(project=other, user=stranger, role=MemberRole.CLIENT)
    refused = httpx.post(
        f"{server}/v1/rewards", json={"model": "helpful", "items": items},
        headers={"Authorization": f"Bearer {Token.objects.create(user=stranger).key}"},
    )  # fmt: skip
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    no_items = httpx.post(
        f"{server}/v1/rewards", json={"model": "helpful", "items": []},
        headers={"Authorization": f"Bearer {token}"},
    )  # fmt: skip
    assert no_items.status_code == 400


def test_the_rate_limit_allows_a_minutes_burst_then_paces():
    now = [0.0]
    limiter = RateLimiter(60, clock=lambda: now[0])
    assert all(limiter.take("a") == 0 for _ in range(60))
    assert limiter.take("a") == pytest.approx(1.0)
    assert limiter.take("b") == 0  # per token
    now[0] += 2.0
    assert limiter.take("a") == 0
    assert RateLimiter(0).take("a") == 0


def test_served_traffic_is_kept_only_where_the_project_and_the_member_opted_in(
    client, served_project, api_client_user, server, annotator
):
    from annotate.models import Comparison, Membership, Prompt, Response
    from training.project_settings import training_settings_update

    question = [{"role": "user", "content": "w9 w8 w7"}]

    def ask_twice(c) -> None:
        c.chat.completions.create(model="helpful", messages=question, n=2, max_tokens=6)
        c.chat.completions.create(model="helpful", messages=question, n=2, max_tokens=6,
                                  stream=True).close()  # fmt: skip

    def kept() -> int:
        deadline = time.monotonic() + 5  # the server keeps an exchange after answering it
        while time.monotonic() < deadline:
            if Prompt.objects.filter(source="served").exists():
                break
            time.sleep(0.1)
        time.sleep(0.3)
        return Prompt.objects.filter(source="served").count()

    Membership.objects.filter(user=api_client_user).update(shares_served_traffic=True)
    ask_twice(client)  # the project keeps nothing yet
    assert kept() == 0

    training_settings_update(project=served_project, values={"served_traffic": "pairs"})
    time.sleep(0.1)
    annotator_token = Token.objects.create(user=annotator).key
    not_opted_in = openai.OpenAI(base_url=f"{server}/v1", api_key=annotator_token, max_retries=0)
    not_opted_in.chat.completions.create(model="helpful", messages=question, n=2, max_tokens=6)
    assert kept() == 0  # a member who did not opt in is never kept

    client.chat.completions.create(model="helpful", messages=question, n=2, max_tokens=6)
    assert kept() == 1
    prompt = Prompt.objects.get(source="served")
    assert prompt.messages == question
    answers = Response.objects.filter(prompt=prompt)
    assert answers.count() == 2
    assert {a.model_version.number for a in answers} == {0}  # the version that answered
    pair = Comparison.objects.get(prompt=prompt)
    assert {pair.response_a_id, pair.response_b_id} == {a.pk for a in answers}
    assert prompt.metadata["served_by_version"] == answers[0].model_version_id


def says_a_base(folder) -> str:
    """A tiny Llama that answers "A" to anything: its output layer is zero, so every logit is
    equal and greedy decoding takes the first word of its vocabulary, "A"."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast

    from tests.engine.tiny import CHAT_TEMPLATE, WORDS, tiny_llama_config

    vocab = ["A", "<pad>", "<unk>", "<|im_end|>", "<|im_start|>", *WORDS]
    backend = Tokenizer(models.WordLevel({t: i for i, t in enumerate(vocab)}, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<pad>", unk_token="<unk>",
        bos_token="<|im_start|>",
    )  # fmt: skip
    tokenizer.chat_template = CHAT_TEMPLATE
    config = tiny_llama_config(
        vocab_size=len(vocab), tie_word_embeddings=False, pad_token_id=1, eos_token_id=3,
        bos_token_id=4, max_position_embeddings=1024,  # the judge asks for 256 new tokens
    )  # fmt: skip
    model = LlamaForCausalLM(config)
    model.lm_head.weight.data.zero_()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def test_an_ai_judge_can_be_tandems_own_policy_server(
    server, served_project, other_project, api_client_user, token, monkeypatch, tmp_path
):
    from annotate.models import Comparison, Judgment, JudgmentSource
    from registry.selectors import active_policy
    from tests.annotate.test_judging import make_round
    from training.ai_judges import ai_judge_create, ai_judge_run, constitution_sha256
    from training.models import AiJudgment

    # The referee: another project's served policy, which the judge's token may ask for.
    referee = says_a_base(tmp_path / "says-a")
    other_project.base_model = referee
    other_project.save()
    ModelVersion.objects.filter(pk=active_policy(project_id=other_project.pk).pk).update(
        base_model=referee
    )
    membership_set(project=other_project, user=api_client_user, role=MemberRole.CLIENT)
    monkeypatch.setenv("REFEREE_TOKEN", token)
    make_round(served_project, prompts=3)
    constitution = "Prefer the answer that is honest."
    judge = ai_judge_create(
        project=served_project, name="Referee", base_url=f"{server}/v1", model="other-team",
        constitution=constitution, api_key_env="REFEREE_TOKEN",
    )  # fmt: skip

    assert ai_judge_run(judge_id=judge.pk, limit=5) == 3

    verdicts = AiJudgment.objects.select_related("judgment")
    assert verdicts.count() == 3
    for verdict in verdicts:
        assert verdict.reply.startswith("A") and verdict.model == "other-team"
        assert verdict.constitution_sha256 == constitution_sha256(constitution)
        judgment = verdict.judgment
        assert judgment.source == JudgmentSource.AI
        assert judgment.choice == "left"  # "A" is the answer shown first
    # Beside the quota: the humans still have every pair to judge.
    assert Judgment.objects.filter(source=JudgmentSource.AI).count() == 3
    assert Comparison.objects.filter(project=served_project, status="open").count() == 3
