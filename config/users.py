"""The user type the apps share, and the one way a view reads it off a request.

Tandem uses Django's own user model (no AUTH_USER_MODEL override), so services take a `User`.
Views run behind IsAuthenticated; `request_user` turns DRF's `AbstractBaseUser | AnonymousUser`
into that type and refuses an anonymous one, which the permission classes already kept out.
"""

from __future__ import annotations

from django.contrib.auth.models import User
from rest_framework.exceptions import NotAuthenticated
from rest_framework.request import Request

__all__ = ["User", "request_user"]


def request_user(request: Request) -> User:
    user = request.user
    if not isinstance(user, User):
        raise NotAuthenticated()
    return user
