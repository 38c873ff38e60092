"""The database itself refuses data that would corrupt the feedback set."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotate.models import Comparison, Prompt, Round, RoundStatus
from registry.selectors import active_policy
from tests.factories import (
    AssignmentFactory,
    ComparisonFactory,
    JudgmentFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db


def test_database_rejects_second_judgment_by_same_annotator_on_same_comparison(project):
    comparison = ComparisonFactory(prompt=PromptFactory(project=project), required_annotations=3)
    annotator = UserFactory()
    JudgmentFactory(comparison=comparison, annotator=annotator, choice="left")
    with pytest.raises(IntegrityError), transaction.atomic():
        JudgmentFactory(comparison=comparison, annotator=annotator, choice="right")


def test_second_annotator_may_judge_the_same_comparison(project):
    comparison = ComparisonFactory(prompt=PromptFactory(project=project), required_annotations=2)
    JudgmentFactory(comparison=comparison)
    JudgmentFactory(comparison=comparison)
    assert comparison.judgments.count() == 2


def test_database_rejects_judgment_count_beyond_required_overlap(project):
    comparison = ComparisonFactory(prompt=PromptFactory(project=project), required_annotations=2)
    Comparison.objects.filter(pk=comparison.pk).update(judgment_count=2)
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.filter(pk=comparison.pk).update(judgment_count=3)


def test_comparison_of_a_response_with_itself_is_rejected(project):
    prompt = PromptFactory(project=project)
    response = ResponseFactory(prompt=prompt)
    with pytest.raises(IntegrityError), transaction.atomic():
        Comparison.objects.create(
            project=project, prompt=prompt, response_a=response, response_b=response
        )


def test_prompt_needs_exactly_one_of_text_and_messages(project):
    with pytest.raises(IntegrityError), transaction.atomic():
        Prompt.objects.create(project=project, text="")
    with pytest.raises(IntegrityError), transaction.atomic():
        Prompt.objects.create(
            project=project, text="hi", messages=[{"role": "user", "content": "hi"}]
        )
    Prompt.objects.create(project=project, messages=[{"role": "user", "content": "hi"}])


def test_external_id_is_unique_per_project_only(project, other_project):
    PromptFactory(project=project, external_id="q-1")
    PromptFactory(project=other_project, external_id="q-1")
    with pytest.raises(IntegrityError), transaction.atomic():
        PromptFactory(project=project, external_id="q-1")
    # Prompts without an external id never collide.
    PromptFactory(project=project, external_id=None)
    PromptFactory(project=project, external_id=None)


def test_only_one_open_round_per_project(project):
    policy = active_policy(project_id=project.pk)
    Round.objects.create(project=project, number=1, policy=policy)
    with pytest.raises(IntegrityError), transaction.atomic():
        Round.objects.create(project=project, number=2, policy=policy)
    Round.objects.filter(project=project).update(
        status=RoundStatus.CLOSED, closed_at=timezone.now()
    )
    Round.objects.create(project=project, number=2, policy=policy)


def test_policy_response_must_name_its_version(project):
    prompt = PromptFactory(project=project)
    with pytest.raises(IntegrityError), transaction.atomic():
        ResponseFactory(prompt=prompt, model_version=None)
    ResponseFactory(prompt=prompt, model_version=None, source="external", external_model="gpt")


def test_an_annotator_is_never_assigned_the_same_comparison_twice(project):
    comparison = ComparisonFactory(prompt=PromptFactory(project=project), required_annotations=3)
    annotator = UserFactory()
    AssignmentFactory(comparison=comparison, annotator=annotator)
    with pytest.raises(IntegrityError), transaction.atomic():
        AssignmentFactory(comparison=comparison, annotator=annotator)


def test_strength_only_with_a_winner(project):
    comparison = ComparisonFactory(prompt=PromptFactory(project=project))
    with pytest.raises(IntegrityError), transaction.atomic():
        JudgmentFactory(comparison=comparison, choice="tie", strength="strong")


def test_judgment_outcome_reads_the_choice_through_the_sides_shown(project):
    comparison = ComparisonFactory(prompt=PromptFactory(project=project), required_annotations=2)
    a_left = JudgmentFactory(comparison=comparison, choice="left")
    b_left = JudgmentFactory(
        comparison=comparison,
        choice="left",
        left_response=comparison.response_b,
        right_response=comparison.response_a,
    )
    assert (a_left.outcome, b_left.outcome) == ("a", "b")
