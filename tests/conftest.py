"""Named roles shared by the whole suite: admin, annotator, other annotator, API client."""

from __future__ import annotations

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotate.models import MemberRole
from annotate.services import membership_set
from tests.factories import ProjectFactory, UserFactory


@pytest.fixture
def project(db):
    return ProjectFactory(name="Helpful answers", slug="helpful")


@pytest.fixture
def other_project(db):
    return ProjectFactory(name="Other team", slug="other-team")


@pytest.fixture
def admin_user(db):
    return UserFactory(username="admin", is_staff=True, is_superuser=True)


@pytest.fixture
def annotator(project):
    user = UserFactory(username="annotator")
    membership_set(project=project, user=user, role=MemberRole.ANNOTATOR)
    return user


@pytest.fixture
def other_annotator(other_project):
    user = UserFactory(username="other-annotator")
    membership_set(project=other_project, user=user, role=MemberRole.ANNOTATOR)
    return user


@pytest.fixture
def api_client_user(project):
    """A program: a user with the client role in `project`, authenticating with a token."""
    user = UserFactory(username="pipeline-bot")
    membership_set(project=project, user=user, role=MemberRole.CLIENT)
    return user


def _client_for(user) -> APIClient:
    client = APIClient()
    if user is not None:
        client.force_authenticate(user=user)
    return client


@pytest.fixture
def anonymous_api():
    return APIClient()


@pytest.fixture
def admin_api(admin_user):
    return _client_for(admin_user)


@pytest.fixture
def annotator_api(annotator):
    return _client_for(annotator)


@pytest.fixture
def other_annotator_api(other_annotator):
    return _client_for(other_annotator)


@pytest.fixture
def token_api(api_client_user):
    token, _ = Token.objects.get_or_create(user=api_client_user)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client
