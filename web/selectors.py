"""Reads the web UI needs that the REST API does not offer: who am I, my progress, round charts."""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict

from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from rest_framework.authtoken.models import Token

from annotate import selectors as annotate_selectors
from annotate.models import (
    Assignment,
    AssignmentStatus,
    Comparison,
    ComparisonStatus,
    Demonstration,
    Judgment,
    MemberRole,
    Membership,
    Project,
    Ranking,
    Rating,
    Round,
    RoundStatus,
)
from annotate.quality import wilson_interval
from config.users import User
from registry.models import ModelKind, ModelVersion
from training.engine import metric_names as metric
from training.models import TrainingRun
from training.version_metrics import (
    REWARD_HELDOUT_ACCURACY,
    REWARD_HELDOUT_PAIRS,
    reward_accuracy,
)


class MyProject(TypedDict):
    id: int
    name: str
    slug: str
    role: str
    paused: bool


class Me(TypedDict):
    id: int
    username: str
    is_staff: bool
    projects: list[MyProject]


class Progress(TypedDict):
    judged_today: int
    judged_total: int
    left_in_round: int
    round: int | None


class RoundSummary(TypedDict):
    number: int
    status: str
    quota: int
    comparisons: int
    complete: int
    judgments: int
    percent_agreement: float | None
    krippendorff_alpha: float | None
    reward_accuracy: float | None
    # Its 95% Wilson interval over the held-out pairs it was measured on (None: not known).
    reward_accuracy_pairs: int | None
    reward_accuracy_low: float | None
    reward_accuracy_high: float | None
    policy_win_rate: float | None
    policy_win_rate_n: int | None  # answers judged for the win-rate gate, and its interval
    policy_win_rate_low: float | None
    policy_win_rate_high: float | None
    # Open rounds: the most pairs that can still complete with the annotators it has now.
    reachable: int | None


class UserMembership(TypedDict):
    project_id: int
    project: str
    role: str
    paused: bool


class UserRow(TypedDict):
    id: int
    username: str
    is_staff: bool
    is_active: bool
    memberships: list[UserMembership]
    token_prefix: str | None
    token_created: datetime | None


def me(*, user: User) -> Me:
    """The signed-in user and the projects they may open, with their role in each."""
    roles = {
        m.project_id: (m.role, m.paused)
        for m in Membership.objects.filter(user=user).only("project_id", "role", "paused")
    }
    projects: list[MyProject] = [
        {
            "id": p.pk,
            "name": p.name,
            "slug": p.slug,
            "role": roles.get(p.pk, ("admin", False))[0],
            "paused": roles.get(p.pk, ("admin", False))[1],
        }
        for p in annotate_selectors.projects_visible_to(user).order_by("name")
    ]
    return {
        "id": user.pk,
        "username": user.get_username(),
        "is_staff": user.is_staff,
        "projects": projects,
    }


def _start_of_today() -> datetime:
    return timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0)


def annotator_progress(*, project: Project, user: User) -> Progress:
    """Judged today and in all, and the open round's pairs this annotator may still get."""
    judged = Judgment.objects.filter(comparison__project=project, annotator=user)
    # A written answer, a rating or a ranking is a judgment of its item too.
    others = [
        Demonstration.objects.filter(project=project, annotator=user, comparison__isnull=False),
        Rating.objects.filter(comparison__project=project, annotator=user),
        Ranking.objects.filter(comparison__project=project, annotator=user),
    ]
    open_round = project.rounds.filter(status=RoundStatus.OPEN).first()
    left = 0
    if open_round is not None:
        # Pairs still open that this annotator never had; an estimate (others may fill them first).
        pairs = Comparison.objects.filter(round=open_round)
        never_had = pairs.filter(status=ComparisonStatus.OPEN).exclude(assignments__annotator=user)
        # The round closes at its quota of complete pairs: no one judges past it.
        to_quota = open_round.quota - pairs.filter(status=ComparisonStatus.COMPLETE).count()
        left = min(never_had.count(), max(0, to_quota))
    return {
        "judged_today": sum(
            rows.filter(created_at__gte=_start_of_today()).count() for rows in [judged, *others]
        ),
        "judged_total": sum(rows.count() for rows in [judged, *others]),
        "left_in_round": left,
        "round": open_round.number if open_round else None,
    }


def _versions_by_round(project: Project) -> dict[int, list[ModelVersion]]:
    """Each round's trained versions, by the runs that made them (a run names its round)."""
    runs = (
        TrainingRun.objects.filter(project=project, round__isnull=False)
        .exclude(output_version=None)
        .select_related("round", "output_version")
        .order_by("output_version__created_at")
    )
    by_round: dict[int, list[ModelVersion]] = {}
    for run in runs:
        assert run.round is not None and run.output_version is not None  # filtered above
        by_round.setdefault(run.round.number, []).append(run.output_version)
    return by_round


class Figure(TypedDict):
    value: float | None
    n: int | None
    low: float | None
    high: float | None


NO_FIGURE: Figure = {"value": None, "n": None, "low": None, "high": None}


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _gate_figure(version: ModelVersion, gate: str) -> Figure:
    """A gate's value with the sample size and Wilson interval the gate check stored."""
    found = ((version.gate_results or {}).get("gates") or {}).get(gate) or {}
    n = _number(found.get("n"))
    return {
        "value": _number(found.get("value")),
        "n": int(n) if n is not None else None,
        "low": _number(found.get("low")),
        "high": _number(found.get("high")),
    }


def _reward_figure(version: ModelVersion) -> Figure:
    """A reward version's headline accuracy; with its interval where it was measured on the
    held-out pairs (the engine's own eval slice has no count stored)."""
    metrics = version.metrics or {}
    accuracy = reward_accuracy(metrics)
    pairs = _number(metrics.get(REWARD_HELDOUT_PAIRS))
    if accuracy is None or pairs is None or _number(metrics.get(REWARD_HELDOUT_ACCURACY)) is None:
        return {**NO_FIGURE, "value": accuracy}
    low, high = wilson_interval(accuracy, int(pairs))
    return {"value": accuracy, "n": int(pairs), "low": low, "high": high}


def round_summaries(*, project: Project) -> list[RoundSummary]:
    """One row per round for the dashboard charts: volume, agreement, reward and policy quality."""
    rounds = list(
        project.rounds.order_by("number").annotate(
            comparisons_total=Count("comparisons"),
            comparisons_complete=Count(
                "comparisons", filter=Q(comparisons__status=ComparisonStatus.COMPLETE)
            ),
        )
    )
    reward_figures: dict[int, Figure] = {}
    win_rates: dict[int, Figure] = {}
    for number, versions in _versions_by_round(project).items():
        for version in versions:  # oldest first: a retrained version overrides its round's
            if version.kind == ModelKind.REWARD:
                accuracy = _reward_figure(version)
                if accuracy["value"] is not None:
                    reward_figures[number] = accuracy
            if version.kind == ModelKind.POLICY:
                rate = _gate_figure(version, metric.WIN_RATE)
                if rate["value"] is not None:
                    win_rates[number] = rate
    rows: list[RoundSummary] = []
    for round_ in rounds:
        stats = annotate_selectors.project_statistics(project=project, round_number=round_.number)
        accuracy = reward_figures.get(round_.number, NO_FIGURE)
        rate = win_rates.get(round_.number, NO_FIGURE)
        rows.append(
            {
                "number": round_.number,
                "status": round_.status,
                "quota": round_.quota,
                "comparisons": round_.comparisons_total,
                "complete": round_.comparisons_complete,
                "judgments": stats["judgments"],
                "percent_agreement": stats["percent_agreement"],
                "krippendorff_alpha": stats["krippendorff_alpha"],
                "reward_accuracy": accuracy["value"],
                "reward_accuracy_pairs": accuracy["n"],
                "reward_accuracy_low": accuracy["low"],
                "reward_accuracy_high": accuracy["high"],
                "policy_win_rate": rate["value"],
                "policy_win_rate_n": rate["n"],
                "policy_win_rate_low": rate["low"],
                "policy_win_rate_high": rate["high"],
                "reachable": (
                    reachable_pairs(round_=round_, complete=round_.comparisons_complete)
                    if round_.status == RoundStatus.OPEN
                    else None
                ),
            }
        )
    return rows


def reachable_pairs(*, round_: Round, complete: int) -> int:
    """Complete pairs plus the open ones that enough of the project's active annotators could
    still judge (they have neither judged nor skipped it): below the quota, the round cannot
    close by itself, and the admin must add annotators, lower the quota or close it."""
    annotators = list(
        Membership.objects.filter(
            project_id=round_.project_id, role=MemberRole.ANNOTATOR, paused=False
        ).values_list("user_id", flat=True)
    )
    available = len(annotators)
    blocked = Count(
        "assignments",
        filter=Q(
            assignments__annotator_id__in=annotators,
            assignments__status__in=[AssignmentStatus.SUBMITTED, AssignmentStatus.SKIPPED],
        ),
    )
    open_pairs = Comparison.objects.filter(round=round_, status=ComparisonStatus.OPEN).annotate(
        blocked=blocked
    )
    could = sum(
        1
        for pair in open_pairs.values("required_annotations", "judgment_count", "blocked")
        if available - pair["blocked"] >= pair["required_annotations"] - pair["judgment_count"]
    )
    return complete + could


def live_leases(*, project: Project, user: User) -> list[Assignment]:
    """The annotator's live leases in a project, oldest first (the oldest is the one on screen)."""
    return list(
        Assignment.objects.filter(
            annotator=user,
            comparison__project=project,
            status=AssignmentStatus.LEASED,
            expires_at__gt=timezone.now(),
        )
        .select_related("comparison__prompt", "comparison__response_a", "comparison__response_b")
        .order_by("leased_at", "id")
    )


def users_with_memberships() -> QuerySet[User]:
    return (
        User.objects.order_by("username")
        .prefetch_related("memberships__project")
        .select_related("auth_token")
    )


def user_row(user: User) -> UserRow:
    token: Token | None = getattr(user, "auth_token", None)
    return {
        "id": user.pk,
        "username": user.get_username(),
        "is_staff": user.is_staff,
        "is_active": user.is_active,
        "memberships": [
            {
                "project_id": m.project_id,
                "project": m.project.name,
                "role": m.role,
                "paused": m.paused,
            }
            for m in user.memberships.all()
        ],
        # Only a prefix: the full key is shown once, when it is made.
        "token_prefix": token.key[:6] if token else None,
        "token_created": token.created if token else None,
    }
