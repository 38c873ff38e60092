"""Sign-in is throttled: wrong passwords lock a username from an address, on the API and the
admin alike, and the lock is visible to (and lifted by) admins."""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from axes.utils import reset
from django.test import Client

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db
LOGIN = "/api/web/login/"


@pytest.fixture
def person(db):
    user = UserFactory(username="carol")
    user.set_password("right-password")
    user.save()
    return user


def _api_login(client: Client, password: str):
    return client.post(
        LOGIN, {"username": "carol", "password": password}, content_type="application/json"
    )


def test_after_the_failure_limit_even_the_right_password_is_refused(person, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert _api_login(client, "wrong").status_code == 400
    locked = _api_login(client, "wrong")
    assert locked.status_code == 429
    assert locked.json()["error"] == "locked_out"
    refused = _api_login(client, "right-password")
    assert refused.status_code == 429
    assert "locked" in refused.json()["detail"]
    # Admins see the lock in the admin and can lift it; then the right password works.
    attempt = AccessAttempt.objects.get(username="carol")
    assert attempt.failures_since_start >= settings.AXES_FAILURE_LIMIT
    reset(username="carol")
    assert _api_login(client, "right-password").status_code == 200


def test_a_success_before_the_limit_starts_the_count_again(person, settings):
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        _api_login(client, "wrong")
    assert _api_login(client, "right-password").status_code == 200
    assert _api_login(client, "wrong").status_code == 400  # one failure, not the limit


def test_the_admin_login_is_throttled_too(person, settings):
    person.is_staff = True
    person.save()
    client = Client()
    form = {"username": "carol", "password": "wrong", "next": "/admin/"}
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/admin/login/", form)
    response = client.post("/admin/login/", {**form, "password": "right-password"})
    assert response.status_code == 429
    assert b"locked" in response.content


def test_admins_see_the_attempts_in_the_admin(person, admin_user):
    _api_login(Client(), "wrong")
    admin = Client()
    admin.force_login(admin_user)
    page = admin.get("/admin/axes/accessattempt/")
    assert page.status_code == 200 and b"carol" in page.content
