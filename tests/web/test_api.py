"""The web UI's own endpoints: sign-in, me, progress, lease-ahead, round charts, accounts."""

from __future__ import annotations

import pytest
from django.test import Client, RequestFactory
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotate.models import Assignment, AssignmentStatus
from annotate.services import (
    assignment_lease_next,
    assignment_skip,
    judgment_submit,
    round_close,
    round_open,
)
from registry.models import ModelKind, ModelVersion
from tests.factories import ComparisonFactory, PromptFactory, UserFactory
from training.models import TrainingRun


@pytest.fixture
def open_round_pairs(project):
    round_ = round_open(project=project)
    return [
        ComparisonFactory(prompt=PromptFactory(project=project), round=round_) for _ in range(4)
    ]


def test_login_sets_a_session_and_me_lists_the_members_projects(project, annotator):
    client = Client(enforce_csrf_checks=True)
    page = client.get("/app/annotate/1")
    csrf = page.cookies["csrftoken"].value
    response = client.post(
        "/api/web/login/",
        {"username": "annotator", "password": "correct horse battery"},
        content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )
    assert response.status_code == 200, response.content
    me = client.get("/api/web/me/").json()
    assert me["username"] == "annotator"
    assert me["is_staff"] is False
    assert [(p["slug"], p["role"]) for p in me["projects"]] == [("helpful", "annotator")]


def test_login_refuses_a_wrong_password_and_a_missing_csrf_token(annotator):
    client = Client(enforce_csrf_checks=True)
    no_token = client.post(
        "/api/web/login/",
        {"username": "annotator", "password": "correct horse battery"},
        content_type="application/json",
    )
    assert no_token.status_code == 403
    csrf = client.get("/").cookies["csrftoken"].value
    wrong = client.post(
        "/api/web/login/",
        {"username": "annotator", "password": "nope"},
        content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )
    assert wrong.status_code == 400
    assert wrong.json()["error"] == "bad_credentials"
    assert client.get("/api/web/me/").status_code in (401, 403)


def test_spa_pages_serve_index_html_with_a_content_security_policy(settings, tmp_path, db):
    (tmp_path / "index.html").write_text("<div id=root></div>")
    settings.FRONTEND_DIST = tmp_path
    response = Client().get("/app/admin/1/training")
    assert response.status_code == 200
    assert b"id=root" in response.content
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert "csrftoken" in response.cookies


def test_progress_counts_todays_judgments_and_pairs_left(project, annotator, open_round_pairs):
    assignment = assignment_lease_next(project=project, annotator=annotator)
    judgment_submit(assignment_id=assignment.pk, annotator=annotator, choice="left")
    client = Client()
    client.force_login(annotator)
    body = client.get(f"/api/web/projects/{project.pk}/progress/").json()
    assert body == {"judged_today": 1, "judged_total": 1, "left_in_round": 3, "round": 1}


def test_pairs_left_stop_at_the_rounds_quota(project, annotator, open_round_pairs):
    round_ = open_round_pairs[0].round
    round_.quota = 2  # one pair complete already: one more closes the round
    round_.save()
    assignment = assignment_lease_next(project=project, annotator=annotator)
    judgment_submit(assignment_id=assignment.pk, annotator=annotator, choice="left")
    client = Client()
    client.force_login(annotator)
    body = client.get(f"/api/web/projects/{project.pk}/progress/").json()
    assert body["left_in_round"] == 1


def test_lease_ahead_holds_one_more_pair_and_next_keeps_serving_the_oldest(
    project, annotator, open_round_pairs, annotator_api
):
    first = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    ahead = annotator_api.post(f"/api/web/projects/{project.pk}/lease-ahead/").json()
    again = annotator_api.post(f"/api/web/projects/{project.pk}/lease-ahead/").json()
    assert ahead["assignment_id"] != first["assignment_id"]
    assert again["assignment_id"] == ahead["assignment_id"]  # never a third lease
    assert set(ahead) == {
        "assignment_id",
        "project_id",
        "kind",
        "prompt",
        "left",
        "right",
        "leased_at",
        "expires_at",
    }  # blind: no model identity
    live = Assignment.objects.filter(annotator=annotator, status=AssignmentStatus.LEASED)
    assert live.count() == 2
    still = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    assert still["assignment_id"] == first["assignment_id"]
    submit = annotator_api.post(
        f"/api/assignments/{first['assignment_id']}/submit/", {"choice": "right"}, format="json"
    )
    assert submit.status_code == 201
    following = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    assert following["assignment_id"] == ahead["assignment_id"]


def test_lease_ahead_answers_204_when_nothing_is_left(project, annotator, annotator_api):
    round_open(project=project)
    ComparisonFactory(prompt=PromptFactory(project=project), round=project.rounds.get())
    annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/")
    assert annotator_api.post(f"/api/web/projects/{project.pk}/lease-ahead/").status_code == 204


def _trained_in(round_, version: ModelVersion, kind: str) -> None:
    """The run of `round_`'s chain that produced `version` (what links a version to a round)."""
    TrainingRun.objects.create(
        project=round_.project, round=round_, kind=kind, status="succeeded", output_version=version
    )


def _round_one_versions(project, reward_metrics: dict) -> tuple:
    first = round_open(project=project)
    policy = ModelVersion.objects.get(project=project, kind=ModelKind.POLICY)
    reward = ModelVersion.objects.create(
        project=project, kind=ModelKind.REWARD, number=1, base_model="tiny", metrics=reward_metrics
    )
    candidate = ModelVersion.objects.create(
        project=project,
        kind=ModelKind.POLICY,
        number=1,
        base_model="tiny",
        parent=policy,
        gate_results={"passed": True, "gates": {"win_rate": {"value": 0.62, "passed": True}}},
    )
    return first, reward, candidate


def test_round_summary_reads_agreement_reward_accuracy_and_win_rate(project, admin_api):
    first, reward, candidate = _round_one_versions(project, {"eval_accuracy": 0.7})
    _trained_in(first, reward, "reward")
    _trained_in(first, candidate, "dpo")
    rows = admin_api.get(f"/api/web/projects/{project.pk}/rounds/").json()
    assert rows[0]["number"] == 1
    assert rows[0]["reward_accuracy"] == pytest.approx(0.7)
    assert rows[0]["policy_win_rate"] == pytest.approx(0.62)


def test_round_summary_follows_the_runs_not_the_clock_and_prefers_heldout_accuracy(
    project, admin_api
):
    # Round 1's versions are registered only after round 2 opened (a slow chain, a retry):
    # they still belong to round 1, because the runs that made them say so.
    first, reward, candidate = _round_one_versions(
        project, {"eval_accuracy": 0.7, "heldout_accuracy": 0.55}
    )
    round_close(round=first)
    round_open(project=project)
    ModelVersion.objects.filter(pk__in=[reward.pk, candidate.pk]).update(created_at=timezone.now())
    _trained_in(first, reward, "reward")
    _trained_in(first, candidate, "dpo")
    rows = admin_api.get(f"/api/web/projects/{project.pk}/rounds/").json()
    assert [row["number"] for row in rows] == [1, 2]
    assert rows[0]["reward_accuracy"] == pytest.approx(0.55)  # human held-out pairs first
    assert rows[0]["policy_win_rate"] == pytest.approx(0.62)
    assert rows[1]["reward_accuracy"] is None and rows[1]["policy_win_rate"] is None


def test_round_summary_carries_each_figure_with_its_sample_size_and_interval(project, admin_api):
    from annotate.quality import wilson_interval

    first, reward, candidate = _round_one_versions(
        project, {"eval_accuracy": 0.9, "heldout_accuracy": 0.75, "heldout_pairs": 40}
    )
    candidate.gate_results = {
        "passed": False,
        "gates": {"win_rate": {"value": 0.55, "n": 32, "low": 0.38, "high": 0.71}},
    }
    candidate.save()
    _trained_in(first, reward, "reward")
    _trained_in(first, candidate, "dpo")
    (row,) = admin_api.get(f"/api/web/projects/{project.pk}/rounds/").json()
    low, high = wilson_interval(0.75, 40)
    assert (row["reward_accuracy"], row["reward_accuracy_pairs"]) == (0.75, 40)
    assert (row["reward_accuracy_low"], row["reward_accuracy_high"]) == pytest.approx((low, high))
    assert 0.59 < low < 0.75 < high < 0.87
    assert (row["policy_win_rate"], row["policy_win_rate_n"]) == (0.55, 32)
    assert (row["policy_win_rate_low"], row["policy_win_rate_high"]) == (0.38, 0.71)


def test_a_reward_accuracy_from_the_eval_slice_has_no_interval(project, admin_api):
    first, reward, _ = _round_one_versions(project, {"eval_accuracy": 0.7})
    _trained_in(first, reward, "reward")
    (row,) = admin_api.get(f"/api/web/projects/{project.pk}/rounds/").json()
    assert row["reward_accuracy"] == pytest.approx(0.7)
    assert row["reward_accuracy_pairs"] is row["reward_accuracy_low"] is None


def test_admin_endpoints_refuse_annotators(project, annotator_api):
    assert annotator_api.get("/api/web/users/").status_code == 403
    assert annotator_api.get(f"/api/web/projects/{project.pk}/rounds/").status_code == 403
    assert annotator_api.post("/api/web/users/1/token/").status_code == 403


def test_admin_creates_an_annotator_in_a_project_then_removes_them(project, admin_api):
    created = admin_api.post(
        "/api/web/users/",
        {"username": "carol", "password": "a-long-password-1", "project_id": project.pk},
        format="json",
    )
    assert created.status_code == 201, created.content
    row = created.json()
    assert row["memberships"][0]["role"] == "annotator"
    Client().login(
        request=RequestFactory().post("/"), username="carol", password="a-long-password-1"
    )
    gone = admin_api.delete(f"/api/web/projects/{project.pk}/members/{row['id']}/")
    assert gone.status_code == 204
    assert project.memberships.filter(user_id=row["id"]).count() == 0


def test_admin_rotates_and_revokes_a_token_showing_only_a_prefix_later(admin_api):
    bot = UserFactory(username="bot")
    first = admin_api.post(f"/api/web/users/{bot.pk}/token/").json()["key"]
    second = admin_api.post(f"/api/web/users/{bot.pk}/token/").json()["key"]
    assert first != second
    assert Token.objects.get(user=bot).key == second
    listed = next(u for u in admin_api.get("/api/web/users/").json() if u["username"] == "bot")
    assert listed["token_prefix"] == second[:6]
    assert admin_api.delete(f"/api/web/users/{bot.pk}/token/").status_code == 204
    assert not Token.objects.filter(user=bot).exists()


def test_admin_cannot_deactivate_themselves(admin_user, admin_api):
    response = admin_api.patch(
        f"/api/web/users/{admin_user.pk}/", {"is_active": False}, format="json"
    )
    assert response.status_code == 400


def test_spa_says_how_to_build_the_ui_when_it_is_missing(settings, tmp_path, db):
    settings.FRONTEND_DIST = tmp_path / "missing"
    response = Client().get("/")
    assert response.status_code == 503
    assert b"make demo" in response.content


def test_me_lists_every_project_for_staff_as_admin(project, other_project, admin_user):
    client = Client()
    client.force_login(admin_user)
    me = client.get("/api/web/me/").json()
    assert me["is_staff"] is True
    assert {(p["slug"], p["role"]) for p in me["projects"]} == {
        ("helpful", "admin"),
        ("other-team", "admin"),
    }


def test_lease_ahead_serves_gold_pairs_at_the_projects_rate(project, annotator, annotator_api):
    round_ = round_open(project=project)
    project.gold_rate = 1.0
    project.save(update_fields=["gold_rate"])
    for gold in (None, None, "a", "b"):
        ComparisonFactory(
            prompt=PromptFactory(project=project), round=round_, gold_outcome=gold, priority=1
        )
    first = annotator_api.post(f"/api/projects/{project.pk}/comparisons/next/").json()
    ahead = annotator_api.post(f"/api/web/projects/{project.pk}/lease-ahead/").json()
    leased = Assignment.objects.filter(pk__in=[first["assignment_id"], ahead["assignment_id"]])
    assert all(a.comparison.gold_outcome for a in leased)


def test_the_app_page_names_a_favicon_that_is_served():
    from django.conf import settings as django_settings
    from django.contrib.staticfiles import finders

    index = (django_settings.FRONTEND_DIST / "index.html").read_text()
    assert 'rel="icon"' in index and "/static/app/favicon.svg" in index
    assert finders.find("app/favicon.svg") is not None


def test_an_open_round_says_how_many_pairs_it_can_still_complete(
    project, annotator, admin_api, open_round_pairs
):
    round_ = open_round_pairs[0].round
    round_.quota = 4
    round_.save()

    def reachable() -> int:
        rows = admin_api.get(f"/api/web/projects/{project.pk}/rounds/").json()
        return next(r for r in rows if r["number"] == round_.number)["reachable"]

    assert reachable() == 4  # one annotator, four open pairs that need one judgment each
    lease = assignment_lease_next(project=project, annotator=annotator)
    assignment_skip(assignment_id=lease.pk, annotator=annotator)
    assert reachable() == 3  # the skipped pair has no one left to judge it: quota 4 is out of reach
    annotator.memberships.update(paused=True)
    assert reachable() == 0
