"""Reads for feedback collection. Access rules live here so every view applies the same ones."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from annotate.models import Assignment, Judgment, MemberRole, Membership, Project, Prompt
from config.errors import NotFoundError

User = AbstractBaseUser | AnonymousUser


def projects_visible_to(user: User) -> QuerySet[Project]:
    """Staff see every project; everyone else sees the projects they are a member of."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_staff:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def project_get_for_user(*, user: User, project_id: int) -> Project:
    # Not-member and not-existing answer the same 404, so ids of other projects do not leak.
    project = projects_visible_to(user).filter(pk=project_id).first()
    if project is None:
        raise NotFoundError(f"Project {project_id} does not exist or you are not a member.")
    return project


def user_can_manage_prompts(*, user: User, project: Project) -> bool:
    """Admins and the project's API clients may add prompts; annotators only judge."""
    if user.is_staff:
        return True
    return Membership.objects.filter(project=project, user=user, role=MemberRole.CLIENT).exists()


def prompts_of_project(*, project: Project) -> QuerySet[Prompt]:
    return Prompt.objects.filter(project=project).order_by("id")


def assignment_for_annotator_view(assignment: Assignment) -> dict:
    """What an annotator sees of a leased pair: the prompt and two answers by side.

    Never which model version wrote an answer, nor whether the pair is gold: blind judging.
    """
    comparison = assignment.comparison
    left, right = (
        (comparison.response_a, comparison.response_b)
        if assignment.a_on_left
        else (comparison.response_b, comparison.response_a)
    )
    prompt = comparison.prompt
    return {
        "assignment_id": assignment.pk,
        "project_id": comparison.project_id,
        "prompt": {"text": prompt.text or None, "messages": prompt.messages},
        "left": {"text": left.text},
        "right": {"text": right.text},
        "leased_at": assignment.leased_at,
        "expires_at": assignment.expires_at,
    }


def judgments_visible_to(*, user: User, project: Project) -> QuerySet[Judgment]:
    """Admins and the project's API clients see every judgment; annotators only their own."""
    judgments = Judgment.objects.filter(comparison__project=project).order_by("id")
    if user.is_staff or user_can_manage_prompts(user=user, project=project):
        return judgments
    return judgments.filter(annotator=user)
