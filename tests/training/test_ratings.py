"""Ratings through the platform: items that ask for each answer to be rated on its own, the
project's scale enforced, and a KTO project whose chain trains its policy on the rated answers."""

from __future__ import annotations

import json
import math
import uuid

import pytest
from rest_framework.test import APIClient

from annotate.feedback.rating import rated_answers
from annotate.models import FeedbackKind, MemberRole, Rating, RatingScale, TrainingAlgorithm
from annotate.services import assignment_lease_next, membership_set, round_open
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory, UserFactory
from tests.training.helpers import TINY_TRAINING
from training import pipeline, runner
from training.loop import drive_runs
from training.models import RunKind, RunStatus, TrainingRun
from training.pairing import feedback_kinds_of_prompts

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("no_broker")]


def rating_item(project, round_=None, index: int = 0):
    round_ = round_ or round_open(project=project)
    prompt = PromptFactory(project=project, text=f"Greet a guest, take {index}.")
    return ComparisonFactory(
        prompt=prompt,
        round=round_,
        kind=FeedbackKind.RATING,
        response_a=ResponseFactory(prompt=prompt, text=f"Welcome, please come in ({index})."),
        response_b=ResponseFactory(prompt=prompt, text=f"What do you want? ({index})"),
    )


def rater(project) -> tuple:
    user = UserFactory()
    membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
    client = APIClient()
    client.force_authenticate(user)
    return user, client


def submit(client, assignment_id: int, **body):
    return client.post(
        f"/api/assignments/{assignment_id}/submit/", {"kind": "rating", **body}, format="json"
    )


def test_thumbs_ratings_are_stored_by_side_and_read_back_per_answer(project):
    rating_item(project)
    _, client = rater(project)
    leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    assert leased["kind"] == "rating" and leased["rating_scale"] == "thumbs"
    assert submit(client, leased["assignment_id"], left_score=5, right_score=1).status_code == 400
    assert not Rating.objects.exists()  # a 5 is no thumb

    key = str(uuid.uuid4())
    stored = submit(
        client, leased["assignment_id"], left_score=7, right_score=1, submission_key=key
    )
    assert stored.status_code == 201, stored.json()
    rating = Rating.objects.get()
    assert rating.left_response.text == leased["left"]["text"]
    assert (rating.left_score, rating.right_score) == (7, 1)
    by_text = {r.completion: r.score for r in rated_answers(project=project)}
    assert by_text == {leased["left"]["text"]: 7, leased["right"]["text"]: 1}

    progress = client.get(f"/api/web/projects/{project.pk}/progress/").json()
    assert (progress["judged_today"], progress["judged_total"]) == (1, 1)  # a rating counts
    history = client.get(f"/api/projects/{project.pk}/my-history/").json()
    assert (history["ratings"], history["judgments"]) == (1, 0)

    again = submit(client, leased["assignment_id"], left_score=7, right_score=1, submission_key=key)
    assert again.status_code == 200
    changed = submit(client, leased["assignment_id"], left_score=1, right_score=7)
    assert changed.status_code == 409 and "left 7, right 1" in changed.json()["detail"]


def test_a_seven_point_project_takes_any_score_from_1_to_7(project):
    project.rating_scale = RatingScale.LIKERT_7
    project.save()
    rating_item(project)
    _, client = rater(project)
    leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    assert submit(client, leased["assignment_id"], left_score=8, right_score=1).status_code == 400
    assert submit(client, leased["assignment_id"], left_score=5, right_score=3).status_code == 201


def test_each_prompt_gets_one_kind_by_the_shares_and_held_out_prompts_stay_pairs():
    heldout = set(range(0, 300, 4))
    kinds = feedback_kinds_of_prompts(
        list(range(300)),
        round_number=1,
        shares={FeedbackKind.DEMONSTRATION: 0.25, FeedbackKind.RATING: 0.25},
        is_heldout=heldout.__contains__,
    )
    assert not set(kinds) & heldout
    counted = {kind: list(kinds.values()).count(kind) for kind in set(kinds.values())}
    training = 300 - len(heldout)
    assert 0.15 < counted[FeedbackKind.DEMONSTRATION] / training < 0.35
    assert 0.15 < counted[FeedbackKind.RATING] / training < 0.35


def test_a_kto_project_trains_its_policy_on_the_rated_answers(tiny_project):
    tiny_project.training_algorithm = TrainingAlgorithm.KTO
    tiny_project.rating_scale = RatingScale.LIKERT_7
    tiny_project.training_settings = {
        **tiny_project.training_settings,
        "kto": TINY_TRAINING,
        "evaluation": {"heldout_fraction": 0.5, "max_prompts": 2},
    }
    tiny_project.save()
    for index in range(4):
        PromptFactory(project=tiny_project, text=f"Held-out candidate {index}.")
    round_ = round_open(project=tiny_project)
    for index in range(3):
        rating_item(tiny_project, round_, index)
    user, client = rater(tiny_project)
    while (lease := assignment_lease_next(project=tiny_project, annotator=user)) is not None:
        assert submit(client, lease.pk, left_score=6, right_score=2).status_code == 201

    first = pipeline.round_finish(round=round_)
    assert first.kind == RunKind.KTO  # no pairs: no reward model to train first
    drive_runs(round_, log=lambda message: None)
    chain = TrainingRun.objects.filter(round=round_, chained=True).order_by("id")
    assert list(chain.values_list("kind", "status")) == [
        (RunKind.KTO, RunStatus.SUCCEEDED),
        (RunKind.EVALUATE, RunStatus.SUCCEEDED),
    ]
    candidate = chain.get(kind=RunKind.KTO).output_version
    assert candidate.training_data["rows"] == 6  # two rated answers per item
    assert sorted(candidate.training_data["ratings"]) == sorted(
        Rating.objects.values_list("id", flat=True)
    )


def test_the_statistics_count_rated_answers_and_written_ones(project, admin_api):
    rating_item(project)
    _, client = rater(project)
    leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    submit(client, leased["assignment_id"], left_score=7, right_score=1)
    feedback = admin_api.get(f"/api/projects/{project.pk}/statistics/").json()["feedback"]
    assert feedback["answers_rated"] == 2
    assert feedback["mean_rating"] == 4.0 and feedback["rated_good_share"] == 0.5
    assert feedback["demonstrations"] == 0 and feedback["rankings"] == 0


def test_rated_answers_export_as_trl_unpaired_preferences(project, admin_api):
    rating_item(project)
    _, client = rater(project)
    leased = client.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    submit(client, leased["assignment_id"], left_score=7, right_score=1)
    body = admin_api.get(f"/api/projects/{project.pk}/export/kto/").getvalue().decode()
    rows = {row["completion"][0]["content"]: row for row in map(json.loads, body.splitlines())}
    assert rows[leased["left"]["text"]]["label"] is True
    assert rows[leased["right"]["text"]]["label"] is False
    assert rows[leased["left"]["text"]]["prompt"] == [
        {"role": "user", "content": "Greet a guest, take 0."}
    ]
    bad = admin_api.get(f"/api/projects/{project.pk}/export/kto/?desirable_score=9")
    assert bad.status_code == 400 and "error" in bad.json()


def test_ratings_train_the_reward_model_as_pairs_whose_target_follows_the_scores(
    tiny_project, admin_api
):
    tiny_project.rating_scale = RatingScale.LIKERT_7
    tiny_project.training_settings = {
        **tiny_project.training_settings,
        "evaluation": {"heldout_fraction": 0.0, "max_prompts": 2},
    }
    tiny_project.save()
    round_ = round_open(project=tiny_project)
    for index in range(2):
        rating_item(tiny_project, round_, index)
    user, client = rater(tiny_project)
    scores = iter([(7, 1), (4, 4)])
    while (lease := assignment_lease_next(project=tiny_project, annotator=user)) is not None:
        left, right = next(scores)
        submit(client, lease.pk, left_score=left, right_score=right)
    rows, ids = runner.rating_pair_rows(tiny_project)
    targets = sorted(round(row.target, 3) for row in rows)
    assert targets == [0.5, round(1 / (1 + math.exp(-3)), 3)]  # equal scores tie; 7 vs 1: 0.953
    assert len(ids) == 2

    # Off by default; the setting is checked like any other, then the reward run takes them.
    url = f"/api/projects/{tiny_project.pk}/training-settings/"
    stored = dict(tiny_project.training_settings)  # a PUT replaces them all
    bad = admin_api.put(url, {**stored, "ratings_train_reward": "yes"}, format="json")
    assert bad.status_code == 400
    good = admin_api.put(url, {**stored, "ratings_train_reward": True}, format="json")
    assert good.status_code == 200, good.json()
    run = TrainingRun.objects.create(project=tiny_project, kind=RunKind.REWARD)
    status = runner.training_run_execute(run_id=run.pk)
    run.refresh_from_db()
    assert status == RunStatus.SUCCEEDED, run.error
    assert sorted(run.output_version.training_data["ratings"]) == sorted(ids)
