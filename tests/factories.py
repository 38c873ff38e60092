"""Factories for the whole data model. Projects come from the service so they get a base policy."""

from __future__ import annotations

from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from annotate.models import (
    Assignment,
    Comparison,
    Judgment,
    Membership,
    Project,
    Prompt,
    Response,
    ResponseSource,
)
from annotate.services import project_create
from registry.models import ModelKind, ModelVersion
from registry.selectors import active_policy


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    password = factory.django.Password("correct horse battery")


class ProjectFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Project

    name = factory.Sequence(lambda n: f"Project {n}")
    slug = factory.Sequence(lambda n: f"project-{n}")

    @classmethod
    def _create(cls, model_class, *args, **kwargs):
        return project_create(**kwargs)


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    project = factory.SubFactory(ProjectFactory)
    user = factory.SubFactory(UserFactory)


class PromptFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Prompt

    project = factory.SubFactory(ProjectFactory)
    external_id = factory.Sequence(lambda n: f"prompt-{n}")
    text = factory.Sequence(lambda n: f"Question number {n}?")


class PolicyVersionFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ModelVersion

    project = factory.SubFactory(ProjectFactory)
    kind = ModelKind.POLICY
    number = factory.Sequence(lambda n: n + 1)
    base_model = "tiny-test-model"
    artifact_path = factory.LazyAttribute(lambda v: f"/tmp/adapters/v{v.number}")


class ResponseFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Response

    prompt = factory.SubFactory(PromptFactory)
    model_version = factory.LazyAttribute(lambda r: active_policy(project_id=r.prompt.project.pk))
    source = ResponseSource.POLICY
    text = factory.Sequence(lambda n: f"Answer number {n}.")
    token_count = 4


class ComparisonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Comparison

    prompt = factory.SubFactory(PromptFactory)
    project = factory.LazyAttribute(lambda c: c.prompt.project)
    response_a = factory.LazyAttribute(lambda c: ResponseFactory(prompt=c.prompt))
    response_b = factory.LazyAttribute(lambda c: ResponseFactory(prompt=c.prompt))
    required_annotations = 1


class AssignmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Assignment

    comparison = factory.SubFactory(ComparisonFactory)
    annotator = factory.SubFactory(UserFactory)
    a_on_left = True
    expires_at = factory.LazyFunction(lambda: timezone.now() + timedelta(minutes=10))


class JudgmentFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Judgment

    comparison = factory.SubFactory(ComparisonFactory)
    annotator = factory.SubFactory(UserFactory)
    choice = "left"
    left_response = factory.LazyAttribute(lambda j: j.comparison.response_a)
    right_response = factory.LazyAttribute(lambda j: j.comparison.response_b)
