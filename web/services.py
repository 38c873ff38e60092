"""Writes the web UI needs beyond the REST API: sign-in, prefetching a pair, accounts and tokens."""

from __future__ import annotations

from django.contrib.auth import authenticate, login, logout
from django.contrib.auth.password_validation import validate_password
from django.db import transaction
from django.http import HttpRequest
from rest_framework.authtoken.models import Token

from annotate import services as annotate_services
from annotate.models import Assignment, MemberRole, Membership, Project
from audit.models import AuditAction
from audit.services import audit_record
from config.errors import ApplicationError, NotFoundError
from config.users import User
from web import selectors

# The workspace holds the pair on screen plus one prefetched pair, never more, so a closed tab
# keeps at most two pairs out of the pool until their leases expire.
MAX_LIVE_LEASES = 2


def session_login(*, request: HttpRequest, username: str, password: str) -> User:
    user = authenticate(request, username=username, password=password)
    if user is None:
        raise ApplicationError(
            "Wrong username or password.", code="bad_credentials", http_status=400
        )
    assert isinstance(user, User)  # the only user model (no AUTH_USER_MODEL override)
    login(request, user)
    return user


def session_logout(*, request: HttpRequest) -> None:
    logout(request)


@transaction.atomic
def assignment_lease_ahead(*, project: Project, annotator: User) -> Assignment | None:
    """Lease one more pair beyond the one on screen, so the next appears without a round trip."""
    # First the pair on screen: leasing it locks the annotator's membership row until this
    # transaction ends, so two tabs asking at once cannot both add a pair.
    current = annotate_services.assignment_lease_next(project=project, annotator=annotator)
    if current is None:
        return None
    live = selectors.live_leases(project=project, user=annotator)
    if len(live) >= MAX_LIVE_LEASES:
        return live[1]  # asking again returns the pair already prefetched (a reloaded page)
    return annotate_services.assignment_lease_another(project=project, annotator=annotator)


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    is_staff: bool = False,
    project: Project | None = None,
    role: str = MemberRole.ANNOTATOR,
    actor: User | None = None,
) -> User:
    """A new account, optionally a member of one project at once (both or neither)."""
    if User.objects.filter(username=username).exists():
        raise ApplicationError(f"A user named {username!r} already exists.", code="conflict")
    user = User(username=username, is_staff=is_staff)
    validate_password(password, user)
    user.set_password(password)
    user.save()
    if project is not None:
        annotate_services.membership_set(project=project, user=user, role=role, actor=actor)
    return user


def _user(user_id: int) -> User:
    user = User.objects.filter(pk=user_id).first()
    if user is None:
        raise NotFoundError(f"User {user_id} does not exist.")
    return user


@transaction.atomic
def user_set_active(*, user_id: int, is_active: bool, actor: User) -> User:
    user = _user(user_id)
    if user.pk == actor.pk and not is_active:
        raise ApplicationError("You cannot deactivate your own account.")
    user.is_active = is_active
    user.save(update_fields=["is_active"])
    return user


@transaction.atomic
def membership_remove(*, project: Project, user_id: int, actor: User | None = None) -> None:
    deleted, _ = Membership.objects.filter(project=project, user_id=user_id).delete()
    if not deleted:
        raise NotFoundError(f"User {user_id} is not a member of this project.")
    audit_record(
        action=AuditAction.MEMBERSHIP_REMOVED,
        actor=actor,
        project_id=project.pk,
        target=f"user {user_id}",
    )
    # A lease they held would otherwise stay theirs until it expires (and could be submitted).
    annotate_services.leases_release_for(project_id=project.pk, user_id=user_id)


@transaction.atomic
def token_rotate(*, user_id: int, actor: User | None = None) -> Token:
    """A new API token for the user; the old one stops working at once."""
    user = _user(user_id)
    Token.objects.filter(user=user).delete()
    audit_record(
        action=AuditAction.TOKEN_ROTATED, actor=actor, target=f"user {user.get_username()}"
    )
    return Token.objects.create(user=user)


@transaction.atomic
def token_revoke(*, user_id: int, actor: User | None = None) -> None:
    deleted, _ = Token.objects.filter(user_id=user_id).delete()
    if deleted:
        audit_record(action=AuditAction.TOKEN_REVOKED, actor=actor, target=f"user {user_id}")
