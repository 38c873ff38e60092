"""Token authentication: the one-query lookup answers exactly as DRF's own would."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.authentication import FastTokenAuthentication
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def client_with(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def test_a_valid_token_loads_the_same_user_the_orm_would():
    user = UserFactory(is_staff=True)
    token = Token.objects.create(user=user)
    response = client_with(token.key).get("/api/projects/")
    assert response.status_code == 200
    loaded, loaded_token = FastTokenAuthentication().authenticate_credentials(token.key)
    fresh = get_user_model().objects.get(pk=user.pk)
    for field in get_user_model()._meta.concrete_fields:
        assert getattr(loaded, field.attname) == getattr(fresh, field.attname), field.name
    assert loaded_token.key == token.key and loaded_token.user_id == user.pk


def test_unknown_and_inactive_tokens_are_refused_with_401():
    assert client_with("0" * 40).get("/api/projects/").status_code == 401
    user = UserFactory(is_active=False)
    token = Token.objects.create(user=user)
    response = client_with(token.key).get("/api/projects/")
    assert response.status_code == 401
    assert "inactive" in str(response.json()).lower()
