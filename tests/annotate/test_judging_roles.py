"""Judging rights are checked where a judgment is made: the role now, not the menu drawn before.

Programs (the client role) never judge; a member removed or moved to another role loses the
leases they held, and a lease held from before cannot be submitted.
"""

from __future__ import annotations

import pytest

from annotate.models import Assignment, AssignmentStatus, Judgment, MemberRole
from annotate.services import assignment_lease_next, membership_set
from tests.annotate.test_judging import make_round

pytestmark = pytest.mark.django_db


def _submit(client, assignment_id: int):
    return client.post(
        f"/api/assignments/{assignment_id}/submit/", {"choice": "left"}, format="json"
    )


def test_a_client_token_can_neither_lease_nor_judge(project, api_client_user, token_api):
    make_round(project, prompts=2)
    response = token_api.post(f"/api/projects/{project.pk}/comparisons/next/")
    assert response.status_code == 403
    assert response.json()["error"] == "not_an_annotator"
    assert not Assignment.objects.filter(annotator=api_client_user).exists()


def test_a_lease_held_before_the_role_changed_cannot_be_submitted(
    project, annotator, annotator_api
):
    make_round(project, prompts=2)
    lease = assignment_lease_next(project=project, annotator=annotator)
    assert lease is not None
    # A stale row from before the rule (or a race): the lease is still marked live.
    membership_set(project=project, user=annotator, role=MemberRole.CLIENT)
    Assignment.objects.filter(pk=lease.pk).update(status=AssignmentStatus.LEASED)
    response = _submit(annotator_api, lease.pk)
    assert response.status_code == 403
    assert response.json()["error"] == "not_an_annotator"
    assert not Judgment.objects.exists()


def test_moving_a_member_to_the_client_role_gives_back_their_leases(project, annotator):
    make_round(project, prompts=2)
    lease = assignment_lease_next(project=project, annotator=annotator)
    membership_set(project=project, user=annotator, role=MemberRole.CLIENT)
    assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.RELEASED


def test_a_removed_member_loses_their_lease_and_cannot_submit_it(
    project, annotator, annotator_api, admin_api
):
    make_round(project, prompts=1)
    lease = assignment_lease_next(project=project, annotator=annotator)
    assert lease is not None
    removed = admin_api.delete(f"/api/web/projects/{project.pk}/members/{annotator.pk}/")
    assert removed.status_code == 204
    assert Assignment.objects.get(pk=lease.pk).status == AssignmentStatus.RELEASED
    response = _submit(annotator_api, lease.pk)
    assert response.status_code == 403
    assert not Judgment.objects.exists()
    # Even a lease that somehow stayed live is refused once the membership is gone.
    Assignment.objects.filter(pk=lease.pk).update(status=AssignmentStatus.LEASED)
    response = _submit(annotator_api, lease.pk)
    assert response.status_code == 403
    assert response.json()["detail"] == "You are no longer a member of this project."
    assert not Judgment.objects.exists()
