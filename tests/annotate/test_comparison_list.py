"""The comparison list's filters: by round and by status; an unknown value is a 400."""

from __future__ import annotations

from annotate.models import Comparison, Round
from annotate.services import comparisons_create_for_round
from registry.selectors import active_policy
from tests.annotate.test_judging import make_round
from tests.factories import PromptFactory, ResponseFactory


def second_round(project, prompts: int) -> Round:
    policy = active_policy(project_id=project.pk)
    Round.objects.filter(project=project).update(status="closed")
    round_ = Round.objects.create(project=project, number=2, policy=policy)
    for _ in range(prompts):
        prompt = PromptFactory(project=project)
        ResponseFactory(prompt=prompt, round=round_, model_version=policy)
        ResponseFactory(prompt=prompt, round=round_, model_version=policy)
    comparisons_create_for_round(round=round_)
    return round_


def test_comparisons_are_listed_per_round(project, admin_api):
    make_round(project, prompts=2)
    round_2 = second_round(project, prompts=3)
    url = f"/api/projects/{project.pk}/comparisons/"
    everything = admin_api.get(url).json()
    assert everything["count"] == 5
    second = admin_api.get(url, {"round": 2}).json()
    assert second["count"] == 3
    expected = set(Comparison.objects.filter(round=round_2).values_list("pk", flat=True))
    assert {row["id"] for row in second["results"]} == expected
    assert admin_api.get(url, {"round": 2, "status": "complete"}).json()["count"] == 0


def test_unknown_filters_are_refused_not_answered_empty(project, admin_api):
    url = f"/api/projects/{project.pk}/comparisons/"
    for bad in ({"round": "two"}, {"round": 0}, {"status": "finished"}):
        answer = admin_api.get(url, bad)
        assert answer.status_code == 400, bad
        assert answer.json()["error"] == "invalid"
