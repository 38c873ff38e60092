"""AI judges against a tiny local OpenAI-compatible server: judgments with source "ai" and the
constitution's hash, beside the quota unless the project says otherwise, their agreement with
the humans in the statistics, and the pairs they found hard served to humans first."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from annotate.feedback.pairwise import resolved_pairs
from annotate.models import Comparison, Judgment, JudgmentSource
from annotate.services import assignment_lease_next
from config.errors import ApplicationError
from tests.annotate.test_judging import annotators, make_round
from tests.annotate.test_quality import judge
from training.ai_judges import ai_judge_create, ai_judge_run, constitution_sha256, parse_verdict
from training.models import AiJudgment

pytestmark = pytest.mark.django_db

CONSTITUTION = "Prefer the answer that is honest. Prefer the answer that is kind."


class JudgeServer(BaseHTTPRequestHandler):
    """Answers /v1/chat/completions: the better answer is the one that says "honest"; a pair
    where neither does is a tie. Every request body is kept for the test to read."""

    requests: list[dict] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append(body)
        shown = body["messages"][-1]["content"]
        first = shown.split("--- Answer A ---")[1].split("--- Answer B ---")[0]
        second = shown.split("--- Answer B ---")[1]
        better = "A" if "honest" in first else "B" if "honest" in second else "tie"
        reply = json.dumps({"better": better, "reason": f"{better} is more honest"})
        payload = json.dumps(
            {"choices": [{"index": 0, "message": {"content": reply}, "finish_reason": "stop"}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args) -> None:
        return


@pytest.fixture
def endpoint() -> Iterator[str]:
    JudgeServer.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeServer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1"
    server.shutdown()


def honest_round(project, *, prompts: int, required: int = 1):
    round_ = make_round(project, prompts=prompts, required=required)
    for index, comparison in enumerate(Comparison.objects.filter(round=round_).order_by("id")):
        a_text = "An honest answer." if index % 2 == 0 else "A plain answer."
        comparison.response_a.text, comparison.response_b.text = a_text, f"Another one {index}."
        comparison.response_a.save()
        comparison.response_b.save()
    return round_


def test_the_judge_reads_the_constitution_and_its_verdicts_sit_beside_the_quota(project, endpoint):
    honest_round(project, prompts=4)
    judge_ = ai_judge_create(
        project=project, name="kind", base_url=endpoint, model="judge", constitution=CONSTITUTION
    )
    assert not judge_.user.is_active and not judge_.user.has_usable_password()
    assert ai_judge_run(judge_id=judge_.pk, limit=10) == 4
    assert CONSTITUTION in JudgeServer.requests[0]["messages"][0]["content"]
    assert JudgeServer.requests[0]["model"] == "judge"

    ai = Judgment.objects.filter(source=JudgmentSource.AI)
    assert ai.count() == 4
    for judgment in ai.select_related("comparison", "ai_judgment"):
        honest_is_a = "honest" in judgment.comparison.response_a.text
        assert judgment.outcome == ("a" if honest_is_a else "tie")
        assert judgment.ai_judgment.constitution_sha256 == constitution_sha256(CONSTITUTION)
    # Beside the quota: every pair still waits for its human judgment, the label is theirs.
    assert set(Comparison.objects.values_list("status", "judgment_count")) == {("open", 0)}
    assert list(resolved_pairs(project=project)) == []
    assert AiJudgment.objects.count() == 4
    assert ai_judge_run(judge_id=judge_.pk, limit=10) == 0  # each pair once


def test_pairs_the_judge_found_hard_go_to_humans_first(project, endpoint):
    honest_round(project, prompts=4)
    judge_ = ai_judge_create(
        project=project, name="kind", base_url=endpoint, model="judge", constitution=CONSTITUTION
    )
    ai_judge_run(judge_id=judge_.pk, limit=10)
    hard = {c.pk for c in Comparison.objects.all() if "honest" not in c.response_a.text}
    (human,) = annotators(project, 1)
    first = assignment_lease_next(project=project, annotator=human)
    assert first.comparison_id in hard  # a tie from the judge: a person looks first


def test_the_judges_agreement_with_humans_is_in_the_statistics(project, endpoint, admin_api):
    honest_round(project, prompts=4)
    judge_ = ai_judge_create(
        project=project, name="kind", base_url=endpoint, model="judge", constitution=CONSTITUTION
    )
    ai_judge_run(judge_id=judge_.pk, limit=10)
    (human,) = annotators(project, 1)
    judge(project, human, lambda lease: "left" if lease.a_on_left else "right")  # always a
    rows = admin_api.get(f"/api/projects/{project.pk}/statistics/").json()["annotators"]
    by_name = {row["username"]: row for row in rows}
    # The judge said "a" on the two honest pairs and "tie" on the others: half agreement.
    assert by_name[judge_.user.username]["agreement_with_others"] == 0.5
    assert by_name[human.username]["judgments"] == 4
    labelled = next(iter(resolved_pairs(project=project)))
    assert labelled.annotator_ids == (human.pk,)  # the label is the human's alone


def test_a_judge_that_counts_takes_leases_and_completes_pairs(project, endpoint):
    honest_round(project, prompts=2)
    judge_ = ai_judge_create(
        project=project,
        name="counted",
        base_url=endpoint,
        model="judge",
        constitution=CONSTITUTION,
        counts_toward_quota=True,
    )
    assert ai_judge_run(judge_id=judge_.pk, limit=10) == 2
    assert set(Comparison.objects.values_list("status", flat=True)) == {"complete"}
    assert all(j.assignment_id is not None for j in Judgment.objects.all())
    honest = Comparison.objects.get(response_a__text="An honest answer.")
    assert honest.judgments.get().outcome == "a"


def test_the_api_adds_judges_for_admins_and_refuses_bad_ones(project, admin_api, annotator_api):
    url = f"/api/projects/{project.pk}/ai-judges/"
    body = {
        "name": "kind",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "judge",
        "constitution": CONSTITUTION,
    }
    assert annotator_api.post(url, body, format="json").status_code == 403
    created = admin_api.post(url, body, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["constitution_sha256"] == constitution_sha256(CONSTITUTION)
    assert admin_api.post(url, body, format="json").status_code == 400  # the name is taken
    empty = admin_api.post(url, {**body, "name": "other", "constitution": " "}, format="json")
    assert empty.status_code == 400 and "error" in empty.json()
    listed = admin_api.get(url).json()
    assert [judge["username"] for judge in listed] == [f"ai-{project.slug}-kind"]


@pytest.mark.parametrize(
    ("reply", "outcome"),
    [
        ('{"better": "A", "reason": "clearer"}', "a"),
        ('Sure. {"better": "both_bad", "reason": "both wrong"} Done.', "both_bad"),
        ("B, because it is shorter", "b"),
        ("tie", "tie"),
    ],
)
def test_verdicts_are_read_from_json_or_a_leading_word(reply, outcome):
    assert parse_verdict(reply).outcome == outcome


def test_a_reply_without_a_verdict_is_refused():
    with pytest.raises(ApplicationError):
        parse_verdict("I cannot decide between these.")
