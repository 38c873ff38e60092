"""Leasing and judging: overlap never exceeded, never twice to one annotator, submit once."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from annotate.models import (
    Assignment,
    AssignmentStatus,
    Comparison,
    ComparisonStatus,
    Judgment,
    MemberRole,
    Round,
)
from annotate.services import (
    assignment_lease_next,
    assignment_release,
    assignment_skip,
    comparisons_create_for_round,
    judgment_submit,
    leases_expire,
    membership_set,
)
from config.errors import ApplicationError, ConflictError
from registry.selectors import active_policy
from tests.factories import PromptFactory, ResponseFactory, UserFactory

pytestmark = pytest.mark.django_db


def make_round(project, *, prompts: int, required: int = 1, number: int = 1) -> Round:
    project.required_annotations = required
    project.save()
    policy = active_policy(project_id=project.pk)
    round_ = Round.objects.create(project=project, number=number, policy=policy)
    for _ in range(prompts):
        prompt = PromptFactory(project=project)
        ResponseFactory(prompt=prompt, round=round_, model_version=policy)
        ResponseFactory(prompt=prompt, round=round_, model_version=policy)
    comparisons_create_for_round(round=round_)
    return round_


def annotators(project, count: int) -> list:
    users = [UserFactory() for _ in range(count)]
    for user in users:
        membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
    return users


def test_pairing_makes_one_comparison_per_prompt_and_is_idempotent(project):
    round_ = make_round(project, prompts=3)
    assert Comparison.objects.filter(round=round_).count() == 3
    assert comparisons_create_for_round(round=round_) == []
    assert Comparison.objects.filter(round=round_).count() == 3


def test_a_pair_is_never_leased_beyond_its_overlap(project):
    make_round(project, prompts=1, required=2)
    first, second, third = annotators(project, 3)
    assert assignment_lease_next(project=project, annotator=first) is not None
    assert assignment_lease_next(project=project, annotator=second) is not None
    assert assignment_lease_next(project=project, annotator=third) is None


def test_asking_again_returns_the_live_lease(project, annotator):
    make_round(project, prompts=2)
    first = assignment_lease_next(project=project, annotator=annotator)
    again = assignment_lease_next(project=project, annotator=annotator)
    assert again.pk == first.pk


def test_an_annotator_never_gets_the_same_pair_twice_even_after_skipping(project, annotator):
    make_round(project, prompts=2, required=2)
    first = assignment_lease_next(project=project, annotator=annotator)
    assignment_skip(assignment_id=first.pk, annotator=annotator)
    second = assignment_lease_next(project=project, annotator=annotator)
    assignment_skip(assignment_id=second.pk, annotator=annotator)
    assert second.comparison_id != first.comparison_id
    assert assignment_lease_next(project=project, annotator=annotator) is None


def test_skipped_pair_goes_to_someone_else(project):
    make_round(project, prompts=1)
    skipper, taker = annotators(project, 2)
    lease = assignment_lease_next(project=project, annotator=skipper)
    assignment_skip(assignment_id=lease.pk, annotator=skipper)
    assert assignment_lease_next(project=project, annotator=taker).comparison_id == (
        lease.comparison_id
    )


def test_expired_lease_returns_to_the_pool(project):
    make_round(project, prompts=1)
    slow, fast = annotators(project, 2)
    past = timezone.now() - timedelta(hours=1)
    assignment_lease_next(project=project, annotator=slow, now=past)
    assert leases_expire() == 1
    assert assignment_lease_next(project=project, annotator=fast) is not None


def test_a_released_pair_comes_back_to_its_annotator_with_the_same_sides(project, annotator):
    make_round(project, prompts=2)
    first = assignment_lease_next(project=project, annotator=annotator)
    assignment_release(assignment_id=first.pk, annotator=annotator)  # a reload, a closed tab
    again = assignment_lease_next(project=project, annotator=annotator)
    assert (again.pk, again.comparison_id, again.a_on_left) == (
        first.pk, first.comparison_id, first.a_on_left,
    )  # fmt: skip
    assert again.status == AssignmentStatus.LEASED
    assert judgment_submit(assignment_id=again.pk, annotator=annotator, choice="left").created
    # An expired lease comes back too; only a skip is final.
    past = timezone.now() - timedelta(hours=1)
    late = assignment_lease_next(project=project, annotator=annotator, now=past)
    leases_expire()
    assert assignment_lease_next(project=project, annotator=annotator).pk == late.pk
    assignment_skip(assignment_id=late.pk, annotator=annotator)
    assert assignment_lease_next(project=project, annotator=annotator) is None


def test_submit_records_sides_and_completes_the_pair(project, annotator):
    make_round(project, prompts=1)
    lease = assignment_lease_next(project=project, annotator=annotator)
    result = judgment_submit(
        assignment_id=lease.pk, annotator=annotator, choice="left", strength="clear"
    )
    comparison = Comparison.objects.get(pk=lease.comparison_id)
    shown_left = comparison.response_a_id if lease.a_on_left else comparison.response_b_id
    assert result.created and result.judgment.left_response_id == shown_left
    assert result.judgment.outcome == ("a" if lease.a_on_left else "b")
    assert (comparison.status, comparison.judgment_count) == (ComparisonStatus.COMPLETE, 1)
    lease.refresh_from_db()
    assert lease.status == AssignmentStatus.SUBMITTED


def test_retried_submit_returns_the_stored_judgment(project, annotator):
    make_round(project, prompts=1, required=2)
    lease = assignment_lease_next(project=project, annotator=annotator)
    key = uuid.uuid4()
    first = judgment_submit(assignment_id=lease.pk, annotator=annotator, choice="tie",
                            submission_key=key)  # fmt: skip
    retry = judgment_submit(assignment_id=lease.pk, annotator=annotator, choice="tie",
                            submission_key=key)  # fmt: skip
    assert (first.created, retry.created) == (True, False)
    assert retry.judgment.pk == first.judgment.pk
    assert Judgment.objects.count() == 1
    assert Comparison.objects.get().judgment_count == 1


def test_a_second_different_submit_is_refused_naming_the_first(project, annotator):
    make_round(project, prompts=1)
    lease = assignment_lease_next(project=project, annotator=annotator)
    judgment_submit(assignment_id=lease.pk, annotator=annotator, choice="left", strength="clear",
                    submission_key=uuid.uuid4())  # fmt: skip
    # A stale second tab: a new key, another choice.
    with pytest.raises(ConflictError, match="already judged this pair: left, clear") as refused:
        judgment_submit(assignment_id=lease.pk, annotator=annotator, choice="right",
                        submission_key=uuid.uuid4())  # fmt: skip
    assert refused.value.extra["already"] == "left, clear"
    with pytest.raises(ConflictError):  # no key at all, another strength
        judgment_submit(assignment_id=lease.pk, annotator=annotator, choice="left")
    # The same judgment again (a second tab pressing the same key) is answered, not refused.
    same = judgment_submit(assignment_id=lease.pk, annotator=annotator, choice="left",
                           strength="clear", submission_key=uuid.uuid4())  # fmt: skip
    assert not same.created
    stored = Judgment.objects.get()
    assert (stored.choice, stored.strength) == ("left", "clear")


@pytest.mark.skipif(
    connection.vendor != "postgresql", reason="SQLite cannot write from a WITH clause"
)
def test_a_submit_is_one_statement_on_postgresql(project, annotator, django_assert_num_queries):
    make_round(project, prompts=1)
    lease = assignment_lease_next(project=project, annotator=annotator)
    with django_assert_num_queries(1):
        result = judgment_submit(
            assignment_id=lease.pk, annotator=annotator, choice="right", strength="slight",
            rationale="terse", time_spent_ms=900,
        )  # fmt: skip
    stored = Judgment.objects.get()
    assert (stored.pk, stored.choice, stored.strength, stored.rationale, stored.time_spent_ms) == (
        result.judgment.pk, "right", "slight", "terse", 900,
    )  # fmt: skip
    assert (stored.left_response_id, stored.right_response_id) == (
        result.judgment.left_response_id, result.judgment.right_response_id,
    )  # fmt: skip
    assert stored.submission_key == result.judgment.submission_key


def test_a_submission_key_used_on_another_pair_is_refused_and_counts_nothing(project, annotator):
    make_round(project, prompts=2)
    key = uuid.uuid4()
    first = assignment_lease_next(project=project, annotator=annotator)
    judgment_submit(assignment_id=first.pk, annotator=annotator, choice="left", submission_key=key)
    second = assignment_lease_next(project=project, annotator=annotator)
    with pytest.raises(ConflictError, match="already used for another pair"):
        judgment_submit(assignment_id=second.pk, annotator=annotator, choice="left",
                        submission_key=key)  # fmt: skip
    assert Judgment.objects.count() == 1
    assert Comparison.objects.get(pk=second.comparison_id).judgment_count == 0
    second.refresh_from_db()
    assert second.status == AssignmentStatus.LEASED


def test_late_submit_on_a_full_pair_is_refused_and_counts_nothing(project):
    make_round(project, prompts=1)
    slow, fast = annotators(project, 2)
    past = timezone.now() - timedelta(hours=1)
    slow_lease = assignment_lease_next(project=project, annotator=slow, now=past)
    leases_expire()
    fast_lease = assignment_lease_next(project=project, annotator=fast)
    judgment_submit(assignment_id=fast_lease.pk, annotator=fast, choice="right")
    with pytest.raises(ConflictError, match="already has all the judgments"):
        judgment_submit(assignment_id=slow_lease.pk, annotator=slow, choice="left")
    assert Judgment.objects.count() == 1


def test_late_submit_with_room_left_is_accepted(project):
    make_round(project, prompts=1)
    (slow,) = annotators(project, 1)
    past = timezone.now() - timedelta(hours=1)
    lease = assignment_lease_next(project=project, annotator=slow, now=past)
    leases_expire()
    assert judgment_submit(assignment_id=lease.pk, annotator=slow, choice="left").created


def test_paused_annotator_is_served_nothing(project, annotator):
    make_round(project, prompts=1)
    annotator.memberships.update(paused=True)
    with pytest.raises(ApplicationError, match="paused"):
        assignment_lease_next(project=project, annotator=annotator)


def test_gold_pairs_are_served_at_the_gold_rate(project, annotator):
    make_round(project, prompts=3)
    gold = Comparison.objects.order_by("id").last()
    gold.gold_outcome = "a"
    gold.save()
    project.gold_rate = 1.0
    project.save()
    assert assignment_lease_next(project=project, annotator=annotator).comparison_id == gold.pk


def test_higher_priority_pairs_are_served_first(project, annotator):
    make_round(project, prompts=3)
    urgent = Comparison.objects.order_by("id").last()
    Comparison.objects.filter(pk=urgent.pk).update(priority=5.0)
    assert assignment_lease_next(project=project, annotator=annotator).comparison_id == urgent.pk


def test_closed_round_pairs_are_not_served(project, annotator):
    round_ = make_round(project, prompts=1)
    Round.objects.filter(pk=round_.pk).update(status="closed", closed_at=timezone.now())
    assert assignment_lease_next(project=project, annotator=annotator) is None


def test_non_member_cannot_lease(project):
    with pytest.raises(ApplicationError, match="not a member"):
        assignment_lease_next(project=project, annotator=UserFactory())


def test_assignment_rows_carry_a_random_side(project):
    make_round(project, prompts=40)
    users = annotators(project, 40)
    sides = {assignment_lease_next(project=project, annotator=u).a_on_left for u in users}
    assert sides == {True, False}
    assert Assignment.objects.count() == 40
