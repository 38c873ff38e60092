"""Who may act on a project: the permission classes every API view declares.

Each check runs where the action is taken (DRF calls it before the view's handler). Failures
raise the API's own errors, so bodies keep the shape {"error": ..., "detail": ...}: a project a
user may not see is a 404 (ids of other projects do not leak), one they see but may not manage
a 403. Judging is checked inside the judging services instead, under the membership row lock
(annotate.queue.lock_membership), so a pause or a removal cannot slip between check and write.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from annotate import selectors
from config.errors import ApplicationError
from config.users import request_user


def forbidden(message: str) -> ApplicationError:
    return ApplicationError(message, code="forbidden", http_status=403)


class IsStaff(BasePermission):
    """Admins only."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not request_user(request).is_staff:
            raise forbidden("Only admins do this.")
        return True


class StaffForWrites(BasePermission):
    """Anyone the other checks let in may read; only admins may change (POST, PUT, ...)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if request.method not in SAFE_METHODS and not request_user(request).is_staff:
            raise forbidden("Only admins do this.")
        return True


def _project_id(view: Any) -> int:
    if hasattr(view, "project_id_for"):
        return int(view.project_id_for(view.kwargs))
    return int(view.kwargs["project_id"])


class CanSeeProject(BasePermission):
    """Members of the project and admins; anyone else gets the same 404 as for no project."""

    def has_permission(self, request: Request, view: Any) -> bool:
        selectors.project_get_for_user(user=request_user(request), project_id=_project_id(view))
        return True


class CanManageProject(BasePermission):
    """Admins and the project's API clients (the `client` role); annotators only judge.

    The project is the view's `project_id` URL argument, or what its `project_id_for(kwargs)`
    returns for views addressed by another object (a run, a version).
    """

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request_user(request)
        project = selectors.project_get_for_user(user=user, project_id=_project_id(view))  # 404
        if not selectors.user_can_manage_prompts(user=user, project=project):
            raise forbidden("Only admins and the project's API clients do this.")
        return True
