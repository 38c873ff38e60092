"""The crowd model in the loop: it labels and weighs the pairs the engine trains on when a
project asks for it (and the export on request), and it pauses annotators far below chance
where a project sets a threshold."""

from __future__ import annotations

import json

import pytest

from annotate.models import Comparison, Membership
from audit.models import AuditEvent
from tests.annotate.test_judging import annotators, make_round
from tests.annotate.test_quality import judge
from training import pipeline, runner
from training.project_settings import training_settings_update

pytestmark = pytest.mark.django_db


def _careful_and_contrary(project, *, prompts: int = 12, gold: int = 4):
    """A careful annotator (always a, the better side), a contrary one (always b), two votes a
    pair: majority vote sees only even splits; gold pairs tell the crowd model who is right."""
    make_round(project, prompts=prompts, required=2)
    careful, contrary = annotators(project, 2)
    judge(project, careful, lambda lease: "left" if lease.a_on_left else "right")
    judge(project, contrary, lambda lease: "right" if lease.a_on_left else "left")
    gold_ids = Comparison.objects.order_by("pk").values_list("pk", flat=True)[:gold]
    Comparison.objects.filter(pk__in=list(gold_ids)).update(gold_outcome="a")
    return careful, contrary


def _settings(project, **values) -> None:
    training_settings_update(
        project=project, values={"evaluation": {"heldout_fraction": 0.0}, **values}
    )
    project.refresh_from_db()


def test_the_crowd_model_settles_even_splits_that_majority_vote_drops(project):
    _careful_and_contrary(project)
    _settings(project)
    assert runner.preference_rows(project)[0] == []  # every pair is one vote against one

    _settings(project, label_resolution="crowd")
    rows, ids = runner.preference_rows(project)
    assert len(rows) == 12 and len(set(ids)) == 12
    answers_a = dict(Comparison.objects.values_list("pk", "response_a__text"))
    assert all(row.chosen == answers_a[pk] for row, pk in zip(rows, ids, strict=True))
    assert all(0.8 < row.weight <= 1.0 for row in rows)  # the posterior, not the 0.5 agreement


def test_under_the_crowd_model_a_tie_stays_a_tie_and_both_bad_trains_nothing(project):
    make_round(project, prompts=2, required=1)
    (judge_,) = annotators(project, 1)
    verdicts = iter(["tie", "both_bad"])
    judge(project, judge_, lambda lease: next(verdicts))
    _settings(project, label_resolution="crowd")
    rows, _ = runner.preference_rows(project)
    assert [(row.target, row.weight) for row in rows] == [(0.5, 1.0)]


def test_the_export_labels_by_the_crowd_model_on_request(project, admin_api):
    _careful_and_contrary(project)
    base = f"/api/projects/{project.pk}/export/trl/"

    def exported(url: str) -> list[dict]:
        body = b"".join(admin_api.get(url).streaming_content)
        return [json.loads(line) for line in body.splitlines()]

    assert exported(base) == []
    rows = exported(f"{base}?resolution=crowd")
    assert len(rows) == 12 and all(0.8 < row["weight"] <= 1.0 for row in rows)
    assert {row["agreement"] for row in rows} == {0.5}  # the votes' share, kept as it is
    bad = admin_api.get(f"{base}?resolution=wisdom")
    assert bad.status_code == 400 and "resolution" in bad.content.decode()


def test_annotators_far_below_chance_are_paused_where_the_project_says_so(project, other_project):
    careful, contrary = _careful_and_contrary(project)
    _careful_and_contrary(other_project)  # no threshold set: nobody is paused there
    _settings(project, auto_pause_below=0.3)

    assert pipeline.annotators_auto_pause() == {project.pk: [contrary.pk]}
    paused = dict(Membership.objects.filter(project=project).values_list("user_id", "paused"))
    assert paused == {careful.pk: False, contrary.pk: True}
    assert not Membership.objects.filter(project=other_project, paused=True).exists()
    event = AuditEvent.objects.get(action="annotator.paused", project_id=project.pk)
    assert "crowd-model reliability" in event.detail["reason"]
    assert pipeline.annotators_auto_pause() == {}  # already paused: nothing more to do


@pytest.mark.parametrize("value", [0.0, 0.7, "low"])
def test_an_auto_pause_threshold_above_chance_or_not_a_number_is_refused(project, value):
    from config.errors import ApplicationError

    with pytest.raises(ApplicationError, match="auto_pause_below"):
        training_settings_update(project=project, values={"auto_pause_below": value})
