"""Reads for feedback collection. Access rules live here so every view applies the same ones."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, Literal

from django.db.models import QuerySet

from annotate import crowd, quality, queue
from annotate.crowd import CrowdLabels, RankedKey
from annotate.feedback import JudgmentFacts, feedback_type
from annotate.feedback.ranking import RankingVote, ranking_votes
from annotate.models import (
    Assignment,
    Comparison,
    Demonstration,
    Judgment,
    MemberRole,
    Membership,
    Outcome,
    Project,
    Prompt,
    Ranking,
    Rating,
    Response,
)
from config.errors import NotFoundError
from config.users import User


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


def comparisons_of_project(
    *, project: Project, status: str | None = None, round_number: int | None = None
) -> QuerySet[Comparison]:
    comparisons = Comparison.objects.filter(project=project).order_by("id")
    if status:
        comparisons = comparisons.filter(status=status)
    if round_number is not None:
        comparisons = comparisons.filter(round__number=round_number)
    return comparisons


def members_of_project(*, project: Project) -> QuerySet[Membership]:
    return project.memberships.select_related("user").order_by("user__username")


def user_by_username(*, username: str) -> User:
    user = User.objects.filter(username=username).first()
    if user is None:
        raise NotFoundError(f"No user named {username!r}.")
    return user


def prompts_of_project(*, project: Project) -> QuerySet[Prompt]:
    return Prompt.objects.filter(project=project).order_by("id")


def assignment_for_annotator_view(assignment: Assignment) -> dict:
    """What an annotator sees of a leased pair: the prompt and two answers by side.

    Never which model version wrote an answer, nor whether the pair is gold: blind judging.
    """
    item = queue.leased_item(assignment.pk)
    if item is None:
        raise NotFoundError(f"Assignment {assignment.pk} does not exist.")
    return feedback_type(item.kind).annotator_view(item)


def judgments_visible_to(*, user: User, project: Project) -> QuerySet[Judgment]:
    """Admins and the project's API clients see every judgment; annotators only their own."""
    judgments = Judgment.objects.filter(comparison__project=project).order_by("id")
    if user.is_staff or user_can_manage_prompts(user=user, project=project):
        return judgments
    return judgments.filter(annotator=user)


def demonstrations_visible_to(
    *, user: User, project: Project, review_status: str | None = None
) -> QuerySet[Demonstration]:
    """Every member sees the project's written answers, not only their own: a second
    annotator reviews them. Each row names its author."""
    rows = Demonstration.objects.filter(project=project).order_by("-id")
    if review_status is not None:
        rows = rows.filter(review_status=review_status)
    return rows


def judgment_outcome_rows(
    *, project: Project, comparisons: QuerySet[Comparison] | None = None
) -> list[dict]:
    """Every judgment of a project (or of these comparisons of it) with its outcome in
    a/b/tie/both_bad terms."""
    judgments = Judgment.objects.filter(comparison__project=project)
    if comparisons is not None:
        judgments = judgments.filter(comparison__in=comparisons)
    rows = []
    for row in judgments.values(
        "comparison_id",
        "annotator_id",
        "annotator__username",
        "choice",
        "left_response_id",
        "right_response_id",
        "time_spent_ms",
        "comparison__response_a_id",
        "comparison__gold_outcome",
        "comparison__kind",
        "comparison__round__number",
    ).iterator(chunk_size=2000):
        facts = JudgmentFacts(
            row["choice"],
            row["left_response_id"],
            row["right_response_id"],
            row["comparison__response_a_id"],
        )
        label = feedback_type(row["comparison__kind"]).label(facts)
        rows.append({**row, "outcome": label, "gold": row["comparison__gold_outcome"]})
    return rows


def crowd_fit_of(
    rows: list[dict], ranked: Sequence[RankingVote] = ()
) -> tuple[crowd.CrowdFit, CrowdLabels]:
    """The crowd model over these judgment rows' decided votes and the rankings' two-way
    votes (one model: an annotator's reliability rests on both), anchored by gold pairs."""
    decided = [row for row in rows if row["outcome"] in (Outcome.A, Outcome.B)]
    votes = [
        crowd.Vote(row["comparison_id"], row["annotator_id"], row["outcome"] == Outcome.A)
        for row in decided
    ]
    # The crowd model keys pairs by one integer: ranked pairs take negative ones, which no
    # comparison id can be.
    ranked_ids: dict[RankedKey, int] = {}
    for vote in ranked:
        pair_id = ranked_ids.setdefault(vote.key, -1 - len(ranked_ids))
        votes.append(crowd.Vote(pair_id, vote.annotator_id, vote.lower_better))
    gold_a = {
        row["comparison_id"]: row["gold"] == Outcome.A
        for row in decided
        if row["gold"] in (Outcome.A, Outcome.B)
    }
    fit = crowd.crowd_fit(votes, gold_a)
    labels = CrowdLabels(
        comparisons={pair: p for pair, p in fit.posterior_a.items() if pair >= 0},
        ranked={key: fit.posterior_a[pair_id] for key, pair_id in ranked_ids.items()},
    )
    return fit, labels


def project_crowd_fit(*, project: Project) -> tuple[crowd.CrowdFit, CrowdLabels]:
    """crowd_fit_of every judgment and ranking of the project."""
    return crowd_fit_of(judgment_outcome_rows(project=project), ranking_votes(project=project))


# How a pair's judgments become its label and weight: majority vote (weight = the agreement)
# or the crowd model (annotate.crowd: weight = the label's posterior).
LabelResolution = Literal["majority", "crowd"]


def label_posterior(*, project: Project, resolution: LabelResolution) -> CrowdLabels | None:
    """What `resolved_pairs` needs to label by `resolution`: under the crowd model, each
    pair's P(one side is better) given every judgment and ranking; None for majority vote."""
    if resolution != "crowd":
        return None
    return project_crowd_fit(project=project)[1]


def project_statistics(*, project: Project, round_number: int | None = None) -> dict:
    """Agreement for the project (or a round) and the per-annotator quality table; each
    annotator's reliability comes from the crowd model over every judgment of the project."""
    every_row = judgment_outcome_rows(project=project)  # one read serves both
    fit, _ = crowd_fit_of(every_row, ranking_votes(project=project))
    rows = every_row
    if round_number is not None:
        rows = [row for row in every_row if row["comparison__round__number"] == round_number]
    by_comparison: dict[int, list[dict]] = {}
    for row in rows:
        by_comparison.setdefault(row["comparison_id"], []).append(row)
    units = [[row["outcome"] for row in unit] for unit in by_comparison.values()]
    resolutions = Counter(quality.resolve(unit).label for unit in units)
    by_annotator: dict[int, list[dict]] = {}
    for unit in by_comparison.values():
        for row in unit:
            others = [other["outcome"] for other in unit if other is not row]
            by_annotator.setdefault(row["annotator_id"], []).append({**row, "others": others})
    paused = set(
        Membership.objects.filter(project=project, paused=True).values_list("user_id", flat=True)
    )
    annotators = [
        {
            **asdict(quality.annotator_stats(user_id, own[0]["annotator__username"], own)),
            "paused": user_id in paused,
            "reliability": fit.reliability.get(user_id),
            "decided_votes": fit.votes.get(user_id, 0),
            "flagged": fit.flagged(user_id),
        }
        for user_id, own in sorted(by_annotator.items())
    ]
    return {
        "round": round_number,
        "judgments": len(rows),
        "comparisons_judged": len(by_comparison),
        "percent_agreement": quality.percent_agreement(units),
        "krippendorff_alpha": quality.krippendorff_alpha_nominal(units),
        "resolutions": dict(resolutions),
        "annotators": annotators,
        "feedback": feedback_statistics(project=project, round_number=round_number),
    }


def feedback_statistics(*, project: Project, round_number: int | None = None) -> dict[str, Any]:
    """What the other feedback types gave (in the project, or one round): rankings, written
    answers by review status and how many were rewritten from a shown answer; ratings with
    their mean score and the share at or above the middle of the scale."""
    demonstrations = Demonstration.objects.filter(project=project)
    ratings = Rating.objects.filter(comparison__project=project)
    if round_number is not None:
        demonstrations = demonstrations.filter(comparison__round__number=round_number)
        ratings = ratings.filter(comparison__round__number=round_number)
    by_status = Counter(demonstrations.values_list("review_status", flat=True))
    scores = [score for pair in ratings.values_list("left_score", "right_score") for score in pair]
    rankings = Ranking.objects.filter(comparison__project=project)
    if round_number is not None:
        rankings = rankings.filter(comparison__round__number=round_number)
    return {
        "rankings": rankings.count(),
        "demonstrations": sum(by_status.values()),
        "demonstrations_by_review": dict(by_status),
        "demonstrations_rewritten": demonstrations.exclude(edited_from=None).count(),
        "answers_rated": len(scores),
        "mean_rating": sum(scores) / len(scores) if scores else None,
        "rated_good_share": sum(score >= 4 for score in scores) / len(scores) if scores else None,
    }


PREVIEW_CHARACTERS = 160
HISTORY_LIMIT = 200


def prompt_preview(prompt: Prompt, limit: int = PREVIEW_CHARACTERS) -> str:
    """The prompt's (last user turn's) text, cut to `limit` characters for a list."""
    text = prompt.messages[-1].get("content", "") if prompt.messages else prompt.text
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _versus_others(outcome: str, others: list[str]) -> bool | None:
    """Whether a judgment sided with the strict majority of the pair's other judgments; None
    when there are none, or they have no majority."""
    if not others:
        return None
    majority = quality.resolve(others).label
    return None if majority == quality.DISAGREEMENT else outcome == majority


def annotator_history(*, project: Project, user: User, limit: int = HISTORY_LIMIT) -> dict:
    """What one annotator sees of their own work: totals, accuracy on gold pairs with its 95%
    interval, agreement with the others, judgments per round and their latest judgments.

    Only pairs the annotator has already judged are read, so nothing here tells them which of
    the pairs still ahead of them are gold."""
    judged = Comparison.objects.filter(project=project, judgments__annotator=user)
    rows = judgment_outcome_rows(project=project, comparisons=judged)
    by_comparison: dict[int, list[dict]] = {}
    for row in rows:
        by_comparison.setdefault(row["comparison_id"], []).append(row)
    own = {
        row["comparison_id"]: {
            **row,
            "others": [o["outcome"] for o in unit if o["annotator_id"] != user.pk],
        }
        for unit in by_comparison.values()
        for row in unit
        if row["annotator_id"] == user.pk
    }
    stats = quality.annotator_stats(user.pk, user.get_username(), list(own.values()))
    low, high = (
        quality.wilson_interval(stats.gold_accuracy, stats.gold_judged)
        if stats.gold_accuracy is not None
        else (None, None)
    )
    per_round = Counter(row["comparison__round__number"] for row in own.values())
    latest = (
        Judgment.objects.filter(comparison__project=project, annotator=user)
        .select_related("comparison__prompt", "comparison__round")
        .order_by("-id")[:limit]
    )
    return {
        **asdict(stats),
        "gold_correct": sum(1 for row in own.values() if row["gold"] == row["outcome"]),
        "gold_low": low,
        "gold_high": high,
        "rounds": [
            {"round": number, "judgments": count}
            for number, count in sorted(per_round.items(), key=lambda item: item[0] or 0)
        ],
        "latest": [_history_row(judgment, own[judgment.comparison_id]) for judgment in latest],
        # The other kinds of feedback given, beside the pairwise judgments above.
        "written_answers": Demonstration.objects.filter(
            project=project, annotator=user, comparison__isnull=False
        ).count(),
        "ratings": Rating.objects.filter(comparison__project=project, annotator=user).count(),
        "rankings": Ranking.objects.filter(comparison__project=project, annotator=user).count(),
    }


def _history_row(judgment: Judgment, row: dict) -> dict[str, Any]:
    comparison = judgment.comparison
    gold = row["gold"]
    return {
        "id": judgment.pk,
        "created_at": judgment.created_at,
        "round": comparison.round.number if comparison.round else None,
        "prompt": prompt_preview(comparison.prompt),
        "choice": judgment.choice,
        "strength": judgment.strength,
        "rationale": judgment.rationale,
        "time_spent_ms": judgment.time_spent_ms,
        "gold": None if gold is None else ("correct" if gold == row["outcome"] else "wrong"),
        "other_judgments": len(row["others"]),
        "agrees_with_others": _versus_others(row["outcome"], row["others"]),
    }


def comparison_detail(*, project: Project, comparison_id: int) -> dict[str, Any]:
    """One pair as an admin reviews it: the prompt, both answers and who wrote them, every
    judgment with its rationale (in a/b terms and as the annotator saw it), the majority
    resolution and the crowd model's posterior."""
    try:
        comparison = Comparison.objects.select_related(
            "prompt", "round", "response_a__model_version", "response_b__model_version"
        ).get(project=project, pk=comparison_id)
    except Comparison.DoesNotExist:
        raise NotFoundError(f"Comparison {comparison_id} does not exist in this project.") from None
    judgments = list(comparison.judgments.select_related("annotator").order_by("id"))
    outcomes = [judgment.outcome for judgment in judgments]
    resolution = quality.resolve(outcomes)
    posterior = project_crowd_fit(project=project)[1].comparisons
    prompt = comparison.prompt
    return {
        "id": comparison.pk,
        "round": comparison.round.number if comparison.round else None,
        "status": comparison.status,
        "required_annotations": comparison.required_annotations,
        "priority": comparison.priority,
        "gold_outcome": comparison.gold_outcome,
        "selection": comparison.selection,
        "created_at": comparison.created_at,
        "completed_at": comparison.completed_at,
        "prompt": {"id": prompt.pk, "text": prompt.text or None, "messages": prompt.messages},
        "kind": comparison.kind,
        "answers": [
            _answer_view(comparison.response_a, "a"),
            _answer_view(comparison.response_b, "b"),
        ],
        # A ranking item's other answers, labelled by their place in the item's list.
        "listed_answers": [
            _answer_view(listed.response, str(listed.position + 1))
            for listed in comparison.listed_answers.select_related("response__model_version")
        ],
        "demonstrations": [
            {
                "id": d.pk,
                "username": d.annotator.get_username(),
                "text": d.text,
                "edited_from": d.edited_from_id,
                "review_status": d.review_status,
                "created_at": d.created_at,
            }
            for d in comparison.demonstrations.select_related("annotator").order_by("id")
        ],
        "ratings": [
            {
                "username": r.annotator.get_username(),
                "scale": r.scale,
                # In a/b terms, whichever side each answer was shown on.
                "score_a": r.left_score
                if r.left_response_id == comparison.response_a_id
                else r.right_score,
                "score_b": r.right_score
                if r.left_response_id == comparison.response_a_id
                else r.left_score,
                "created_at": r.created_at,
            }
            for r in comparison.ratings.select_related("annotator").order_by("id")
        ],
        "rankings": [
            {
                "username": r.annotator.get_username(),
                "ranks": {str(k): int(v) for k, v in r.ranks.items()},
                "created_at": r.created_at,
            }
            for r in comparison.rankings.select_related("annotator").order_by("id")
        ],
        "judgments": [
            {
                "id": judgment.pk,
                "annotator_id": judgment.annotator_id,
                "username": judgment.annotator.get_username(),
                "source": judgment.source,
                "outcome": judgment.outcome,
                "choice": judgment.choice,
                "a_on_left": judgment.left_response_id == comparison.response_a_id,
                "strength": judgment.strength,
                "rationale": judgment.rationale,
                "time_spent_ms": judgment.time_spent_ms,
                "created_at": judgment.created_at,
            }
            for judgment in judgments
        ],
        "resolution": {
            "label": resolution.label,
            "agreement": resolution.agreement,
            "counts": resolution.counts,
        },
        "posterior_a": posterior.get(comparison.pk),
    }


def _answer_view(response: Response, side: str) -> dict[str, Any]:
    return {
        "side": side,
        "response_id": response.pk,
        "text": response.text,
        "source": response.source,
        "model_version": response.model_version_id,
        "model_version_number": response.model_version.number if response.model_version else None,
        "external_model": response.external_model,
    }
