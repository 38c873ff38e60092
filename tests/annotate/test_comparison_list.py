"""The comparison list's filters: by round and by status; an unknown value is a 400."""

from __future__ import annotations

from annotate.models import Comparison, Round
from tests.annotate.test_judging import make_round


def second_round(project, prompts: int) -> Round:
    Round.objects.filter(project=project).update(status="closed")  # one open round at a time
    return make_round(project, prompts=prompts, number=2)


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
