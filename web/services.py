"""Writes the web UI needs beyond the REST API: sign-in, prefetching a pair, accounts and tokens."""

from __future__ import annotations

import secrets

from django.conf import settings
from django.contrib.auth import authenticate, get_user_model, login, logout
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotate import services as annotate_services
from annotate.models import Assignment, MemberRole, Membership, Project
from config.errors import ApplicationError, NotFoundError
from web import selectors

# The workspace holds the pair on screen plus one prefetched pair, never more, so a closed tab
# keeps at most two pairs out of the pool until their leases expire.
MAX_LIVE_LEASES = 2


def session_login(*, request: HttpRequest, username: str, password: str) -> AbstractBaseUser:
    user = authenticate(request, username=username, password=password)
    if user is None:
        raise ApplicationError(
            "Wrong username or password.", code="bad_credentials", http_status=400
        )
    login(request, user)
    return user


def session_logout(*, request: HttpRequest) -> None:
    logout(request)


@transaction.atomic
def assignment_lease_ahead(*, project: Project, annotator: AbstractBaseUser) -> Assignment | None:
    """Lease one more pair beyond the one on screen, so the next appears without a round trip.

    The annotate service returns the live lease when there is one, so the extra lease uses its
    candidate query and row-locking lease step directly; the same overlap rules hold.
    """
    live = selectors.live_leases(project=project, user=annotator)
    if len(live) >= MAX_LIVE_LEASES:
        return live[1]  # asking again returns the pair already prefetched (a reloaded page)
    current = annotate_services.assignment_lease_next(project=project, annotator=annotator)
    if current is None:
        return None
    now = timezone.now()
    # Half of all pairs are served through here, so gold pairs come at the project's rate too.
    prefer_gold = project.gold_rate > 0 and secrets.randbelow(10_000) < project.gold_rate * 10_000
    for gold in [True, None] if prefer_gold else [False, None]:
        candidates = annotate_services._candidate_ids(
            project, annotator, now, gold=gold, skip=set()
        )
        for comparison_id in candidates:
            assignment = annotate_services._try_lease(
                comparison_id, annotator, now, settings.LEASE_SECONDS
            )
            if assignment is not None:
                return assignment
    return None


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    is_staff: bool = False,
    project: Project | None = None,
    role: str = MemberRole.ANNOTATOR,
) -> AbstractBaseUser:
    """A new account, optionally a member of one project at once (both or neither)."""
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        raise ApplicationError(f"A user named {username!r} already exists.", code="conflict")
    user = User(username=username, is_staff=is_staff)
    validate_password(password, user)
    user.set_password(password)
    user.save()
    if project is not None:
        annotate_services.membership_set(project=project, user=user, role=role)
    return user


def _user(user_id: int) -> AbstractBaseUser:
    user = get_user_model().objects.filter(pk=user_id).first()
    if user is None:
        raise NotFoundError(f"User {user_id} does not exist.")
    return user


@transaction.atomic
def user_set_active(*, user_id: int, is_active: bool, actor: AbstractBaseUser) -> AbstractBaseUser:
    user = _user(user_id)
    if user.pk == actor.pk and not is_active:
        raise ApplicationError("You cannot deactivate your own account.")
    user.is_active = is_active
    user.save(update_fields=["is_active"])
    return user


@transaction.atomic
def membership_remove(*, project: Project, user_id: int) -> None:
    deleted, _ = Membership.objects.filter(project=project, user_id=user_id).delete()
    if not deleted:
        raise NotFoundError(f"User {user_id} is not a member of this project.")


@transaction.atomic
def token_rotate(*, user_id: int) -> Token:
    """A new API token for the user; the old one stops working at once."""
    user = _user(user_id)
    Token.objects.filter(user=user).delete()
    return Token.objects.create(user=user)


@transaction.atomic
def token_revoke(*, user_id: int) -> None:
    Token.objects.filter(user_id=user_id).delete()
